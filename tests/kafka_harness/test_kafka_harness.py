"""The Kafka harness against the real broker: records produced come back once each, an
aborted transaction stays invisible to ``read_committed`` readers, and a three-node cluster
keeps serving after its partition leader is killed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import orjson
import pytest
from confluent_kafka import KafkaError, Producer

from tests.kafka import Kafka, read_topic

RECORDS = 10_000


def produce(producer: Producer, topic: str, values: Iterable[dict[str, object]]) -> None:
    """Produce ``values`` as JSON, keyed by their ``id``, and flush; fail on any record
    whose delivery failed."""
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    for value in values:
        producer.produce(
            topic, key=str(value["id"]).encode(), value=orjson.dumps(value), on_delivery=delivered
        )
        producer.poll(0)
    assert producer.flush(60) == 0, "records still undelivered after 60 s"
    assert not failures, f"{len(failures)} records not delivered, first: {failures[0]}"


def ids(records: list[tuple[int, int, bytes | None, bytes | None]]) -> Counter[int]:
    return Counter(orjson.loads(value)["id"] for _, _, _, value in records if value is not None)


def test_records_produced_are_read_back_once(kafka: Kafka) -> None:
    kafka.create_topic("events", partitions=6)
    producer = Producer(kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5}))
    produce(producer, "events", ({"id": i, "user": f"u{i % 97}"} for i in range(RECORDS)))

    records = read_topic(kafka, "events", isolation="read_committed")

    assert ids(records) == Counter(range(RECORDS))
    # Keys spread the records over every partition.
    assert {partition for partition, *_ in records} == set(range(6))


def test_aborted_transaction_is_invisible_to_read_committed(kafka: Kafka) -> None:
    kafka.create_topic("txn", partitions=1)
    producer = Producer(kafka.client_config(**{"transactional.id": "mesh-tests-txn"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    produce(producer, "txn", ({"id": i, "fate": "aborted"} for i in range(100)))
    producer.abort_transaction(30)
    producer.begin_transaction()
    produce(producer, "txn", ({"id": i, "fate": "committed"} for i in range(100, 200)))
    producer.commit_transaction(30)

    committed = read_topic(kafka, "txn", isolation="read_committed")
    uncommitted = read_topic(kafka, "txn", isolation="read_uncommitted")

    assert ids(committed) == Counter(range(100, 200))
    # The aborted records are in the log all the same (so the test shows something).
    assert ids(uncommitted) == Counter(range(200))


@pytest.mark.slow
def test_cluster_serves_after_the_partition_leader_is_killed(kafka_cluster: Kafka) -> None:
    kafka = kafka_cluster
    kafka.create_topic("replicated", partitions=3, replication=3)
    producer = Producer(
        kafka.client_config(**{"transactional.id": "mesh-tests-failover", "linger.ms": 5})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    produce(producer, "replicated", ({"id": i} for i in range(1000)))
    producer.commit_transaction(30)

    leader = kafka.partition_leader("replicated", 0)
    kafka.node(leader).kill()

    def new_leader() -> int | None:
        partition = kafka.metadata("replicated").topics["replicated"].partitions[0]
        moved = partition.leader not in (-1, leader) and leader not in partition.isrs
        return partition.leader if moved else None

    successor = kafka.wait_for(new_leader, f"partition 0 to leave node {leader}", 60)
    assert kafka.node(successor).alive()

    # Transactions go on with two of three replicas (min.insync.replicas=2).
    producer.begin_transaction()
    produce(producer, "replicated", ({"id": i} for i in range(1000, 2000)))
    producer.commit_transaction(60)

    assert ids(read_topic(kafka, "replicated")) == Counter(range(2000))
