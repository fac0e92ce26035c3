"""Load examples/data/clicks/*.jsonl into the Kafka topic ``clicks`` (for
examples/kafka_clicks.py).

Creates the topic (6 partitions) and ``clicks-per-user`` if they do not exist, then sends
every event keyed by its user, so each user's events stay in order in one partition.

    python examples/data/load_kafka.py [--bootstrap HOST:PORT]   # default: $KAFKA_BOOTSTRAP
                                                                 # or localhost:9092
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

CLICKS = Path(__file__).parent / "clicks"


def load(bootstrap: str, topic: str = "clicks", partitions: int = 6) -> int:
    """Create the topics and send the events; returns how many were sent."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [NewTopic(topic, partitions, 1), NewTopic(f"{topic}-per-user", partitions, 1)]
    existing = admin.list_topics(timeout=10).topics
    for future in admin.create_topics([t for t in wanted if t.topic not in existing]).values():
        future.result()
    # Idempotence keeps each partition in the order sent even when a batch is retried
    # (a topic just created may refuse the first ones).
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}
    )
    sent = 0
    for path in sorted(CLICKS.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            user = orjson.loads(line)["user"]
            while True:
                try:
                    producer.produce(topic, value=line, key=user.encode())
                    break
                except BufferError:  # the local queue is full: let it drain
                    producer.poll(0.1)
            sent += 1
    if producer.flush(60):
        raise KafkaException(f"not every event reached {bootstrap} within 60 s")
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092"))
    parser.add_argument("--topic", default="clicks")
    args = parser.parse_args()
    print(f"sent {load(args.bootstrap, args.topic)} events to {args.topic}")


if __name__ == "__main__":
    main()
