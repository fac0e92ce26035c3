"""Clicks per user in 10-second event-time windows, from Kafka to Kafka, exactly once.

The windowed job of examples/clicks.py, reading the page events from the Kafka topic
``clicks`` and writing each window's count to the topic ``clicks-per-user`` (keyed by
user) in Kafka transactions tied to checkpoints: a consumer that reads with
``isolation.level=read_committed`` sees every count exactly once, even if a node dies.

Watermarks are kept per partition, so a partition that falls behind holds event time
back instead of making its events late. ``stop_at="latest"`` reads what the topic holds
when the job starts and then finishes (drop it to keep reading). With a broker on
localhost:9092 (``KAFKA_BOOTSTRAP`` says otherwise; see the README), load the events
and run it:

    python examples/data/load_kafka.py
    mesh run examples/kafka_clicks.py --nodes 2
"""

import os

from mesh import Job, WatermarkStrategy, sinks, sources, windows

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092")

job = Job("kafka-clicks", parallelism=2, checkpoint_interval="2s")

events = job.source(
    sources.Kafka("clicks", bootstrap=BOOTSTRAP, group="kafka-clicks", stop_at="latest"),
    watermarks=WatermarkStrategy.bounded(
        max_delay="2s", timestamp=lambda e: e["ts"], idle_timeout="10s"
    ),
).uid("clicks")
per_user = (
    events.filter(lambda e: e["kind"] == "click")
    .key_by(lambda e: e["user"])
    .window(windows.Tumbling("10s"))
    .count()
    .uid("clicks-per-user")
)
per_user.sink(
    sinks.Kafka("clicks-per-user", bootstrap=BOOTSTRAP, key="key", semantic="exactly_once")
).uid("out")
