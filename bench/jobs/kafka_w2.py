"""W2 over Kafka: the events topic → key_by(user) → running sum of value → a Kafka topic
keyed by user, exactly-once (a transaction per completed checkpoint, every 1 s), at
parallelism 2 across 2 nodes (a hash shuffle), as W2 over files (bench/jobs/w2.py).

bench/kafka.py sets MESH_BENCH_BOOTSTRAP, MESH_BENCH_TOPIC (input) and
MESH_BENCH_OUT_TOPIC before it starts the cluster: the job file reads them at import, on
the client and on every node alike.
"""

import os

from mesh import Job, sinks, sources

BOOTSTRAP = os.environ.get("MESH_BENCH_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("MESH_BENCH_TOPIC", "events")
OUT_TOPIC = os.environ.get("MESH_BENCH_OUT_TOPIC", "kafka-w2")

job = Job("kafka-w2", parallelism=2, checkpoint_interval="1s", checkpoint_mode="exactly_once")
(
    job.source(sources.Kafka([TOPIC], bootstrap=BOOTSTRAP, stop_at="latest"))
    .uid("events")
    .key_by(lambda e: e["user"])
    .sum("value")
    .uid("sums")
    .sink(sinks.Kafka(OUT_TOPIC, bootstrap=BOOTSTRAP, key="user", semantic="exactly_once"))
    .uid("out")
)
