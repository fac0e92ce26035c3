"""Kafka: ``sources.Kafka`` reads topic partitions as splits (exactly-once with a
checkpointed job), ``sinks.Kafka`` writes a topic, at-least-once with an idempotent
producer or exactly-once in one transaction per completed checkpoint.

Both use confluent-kafka (``pip install 'mesh-stream[kafka]'``), imported only on the
node when a reader or writer is opened: a job file can describe a Kafka job without it
installed only as far as the description's constructor, which checks it is there.
Every call into the client runs in a worker thread, never on the event loop.
"""
