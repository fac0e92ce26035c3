"""W1 over Kafka: the events topic → filter on a word in the text → map to {user, value}
→ a Kafka topic, exactly-once (a transaction per completed checkpoint, every 1 s), one
chain on one node, as W1 over files (bench/jobs/w1.py).

bench/kafka.py sets MESH_BENCH_BOOTSTRAP, MESH_BENCH_TOPIC (input) and
MESH_BENCH_OUT_TOPIC before it starts the cluster: the job file reads them at import, on
the client and on every node alike.
"""

import os

from mesh import Job, sinks, sources

BOOTSTRAP = os.environ.get("MESH_BENCH_BOOTSTRAP", "127.0.0.1:9092")
TOPIC = os.environ.get("MESH_BENCH_TOPIC", "events")
OUT_TOPIC = os.environ.get("MESH_BENCH_OUT_TOPIC", "kafka-w1")

job = Job("kafka-w1", parallelism=1, checkpoint_interval="1s", checkpoint_mode="exactly_once")
(
    job.source(sources.Kafka([TOPIC], bootstrap=BOOTSTRAP, stop_at="latest"))
    .uid("events")
    .filter(lambda e: "error" in e["text"])
    .map(lambda e: {"user": e["user"], "value": e["value"]})
    .sink(sinks.Kafka(OUT_TOPIC, bootstrap=BOOTSTRAP, key="user", semantic="exactly_once"))
    .uid("out")
)
