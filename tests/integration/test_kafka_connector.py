"""The Kafka connector against a real broker (KRaft, one node for the whole module):
readers of several subtasks read every record once, restore from their splits at
another parallelism, end when bounded (also past transaction markers), find new
partitions, start where told; the sink writes at-least-once, and exactly-once with a
marker that makes a repeated commit write nothing, fences zombies and reports an
expired transaction clearly."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewPartitions

from mesh.api import sinks, sources
from mesh.connectors.base import RestoredSplits, Split
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.committer import KafkaCommitter
from mesh.connectors.kafka.reader import KafkaReader
from mesh.connectors.kafka.sink import transactional_id
from mesh.errors import ConnectorError, EncodingError, GraphError, StateError
from mesh.time.clock import SystemClock
from tests.jaeger import free_port
from tests.kafka import Kafka, kafka_libs, read_topic, running_kafka
from tests.tools import require_binary

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    libs = require_binary(kafka_libs(), "Kafka", "MESH_KAFKA", "jars")
    with running_kafka(tmp_path_factory.mktemp("kafka"), libs) as running:
        yield running


def ctx(
    subtask: int = 0, parallelism: int = 1, uid: str = "kafka-op", job: str = "job-1"
) -> TaskContext:
    return TaskContext(
        job_id=job,
        attempt=0,
        node_id="node-1",
        task_name="kafka",
        subtask_index=subtask,
        parallelism=parallelism,
        max_parallelism=128,
        base_dir=Path("."),
        clock=SystemClock(),
        operator_uid=uid,
    )


def produce(kafka: Kafka, topic: str, values: list[tuple[int, Any]], **extra: Any) -> None:
    """(partition, value) pairs, JSON unless bytes, idempotent, flushed."""
    producer = Producer(kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5}))
    for partition, value in values:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        producer.produce(topic, raw, partition=partition, **extra)
        producer.poll(0)
    assert producer.flush(60) == 0


def fill(kafka: Kafka, topic: str, partitions: int, count: int, first: int = 0) -> list[int]:
    ids = list(range(first, first + count))
    produce(kafka, topic, [(i % partitions, {"id": i, "p": i % partitions}) for i in ids])
    return ids


async def opened(
    source: sources.Kafka,
    subtask: int = 0,
    parallelism: int = 1,
    restored: RestoredSplits | None = None,
) -> KafkaReader:
    reader = source.create_reader(ctx(subtask, parallelism))
    reader.initialize(restored)
    await reader.open()
    return reader


class Drained:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.reads = 0


async def read_some(
    readers: list[KafkaReader],
    out: Drained,
    *,
    until: int | None = None,
    batch: int = 97,
    timeout_s: float = 60,
) -> None:
    """Read round-robin until ``out`` holds ``until`` ids (unbounded) or every reader
    returned None; each read must be of one partition, named by ``last_split``."""
    finished: set[int] = set()
    with anyio.fail_after(timeout_s):
        while len(finished) < len(readers) and (until is None or len(out.ids) < until):
            for n, reader in enumerate(readers):
                if n in finished:
                    continue
                records = await reader.read(
                    batch if until is None else min(batch, until - len(out.ids))
                )
                if records is None:
                    finished.add(n)
                    continue
                assert not reader.take_rejected()
                if records:
                    partitions = {r["p"] for r in records}
                    assert len(partitions) == 1, f"one read, several partitions: {partitions}"
                    assert reader.last_split is not None
                    assert reader.last_split.endswith(f"-{partitions.pop()}")
                    out.ids.extend(r["id"] for r in records)
                    out.reads += 1
                if until is not None and len(out.ids) >= until:
                    return


def deal(everyone: list[Split], parallelism: int) -> list[RestoredSplits]:
    return [
        RestoredSplits(mine=everyone[k::parallelism], everyone=everyone) for k in range(parallelism)
    ]


def close_all(readers: list[KafkaReader]) -> None:
    for reader in readers:
        reader.close()


@pytest.mark.asyncio
async def test_subtasks_read_every_record_once_and_go_on_from_a_snapshot(kafka: Kafka) -> None:
    kafka.create_topic("six", partitions=6)
    ids = fill(kafka, "six", 6, 6000)
    source = sources.Kafka("six", bootstrap=kafka.bootstrap)
    readers = [await opened(source, k, 3) for k in range(3)]
    try:
        assert sorted(s for r in readers for s in r.split_ids() or []) == sorted(
            f"six-{p}" for p in range(6)
        )
        before = Drained()
        await read_some(readers, before, until=2500)
        everyone = [split for n, r in enumerate(readers) for split in r.snapshot(1)]
        after_snapshot = Drained()  # read, then lost with the failure
        await read_some(readers, after_snapshot, until=500)
    finally:
        close_all(readers)
    assert len(set(before.ids)) == len(before.ids) == 2500
    assert all(s["offset"] >= 0 and s["stop"] is None for s in everyone)

    for parallelism in (3, 2):
        restored = [
            await opened(source, k, parallelism, dealt)
            for k, dealt in enumerate(deal(everyone, parallelism))
        ]
        try:
            rest = Drained()
            await read_some(restored, rest, until=len(ids) - 2500)
            # Nothing more comes (give it a few reads).
            for reader in restored:
                for _ in range(3):
                    assert await reader.read(100) == []
        finally:
            close_all(restored)
        assert Counter(before.ids + rest.ids) == Counter(ids), parallelism


@pytest.mark.asyncio
async def test_bounded_source_ends_at_the_end_offsets_of_its_start(kafka: Kafka) -> None:
    kafka.create_topic("bounded", partitions=3)
    ids = fill(kafka, "bounded", 3, 3000)
    source = sources.Kafka(["bounded"], bootstrap=kafka.bootstrap, stop_at="latest")
    assert source.bounded and source.replayable
    reader = await opened(source)
    try:
        fill(kafka, "bounded", 3, 30, first=10_000)  # after the start: not read
        out = Drained()
        await read_some([reader], out)
        assert sorted(out.ids) == ids
        assert reader.progress() == (3000, 3000)
        assert await reader.read(10) is None
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_a_pattern_reads_every_matching_topic_and_null_values_stay_none(
    kafka: Kafka,
) -> None:
    kafka.create_topic("pat-a", partitions=2)
    kafka.create_topic("pat-b", partitions=3)
    kafka.create_topic("other-c", partitions=1)
    produce(kafka, "pat-a", [(i % 2, {"t": "a", "i": i}) for i in range(200)])
    produce(kafka, "pat-b", [(i % 3, {"t": "b", "i": i}) for i in range(300)])
    produce(kafka, "other-c", [(0, {"t": "c", "i": 0})])
    tombstones = Producer(kafka.client_config())
    tombstones.produce("pat-b", None, b"gone", partition=1)
    assert tombstones.flush(30) == 0
    source = sources.Kafka(pattern=r"pat-.*", bootstrap=kafka.bootstrap, stop_at="latest")
    reader = await opened(source)
    got: list[Any] = []
    try:
        with anyio.fail_after(60):
            while (records := await reader.read(64)) is not None:
                if records:
                    topics = {r["t"] for r in records if r is not None}
                    assert len(topics) <= 1  # one split per read
                    assert reader.last_split is not None
                    assert not topics or reader.last_split.startswith(f"pat-{topics.pop()}-")
                    got.extend(records)
    finally:
        reader.close()
    assert sorted(reader.split_ids() or []) == [
        "pat-a-0",
        "pat-a-1",
        "pat-b-0",
        "pat-b-1",
        "pat-b-2",
    ]
    assert got.count(None) == 1
    assert sorted((r["t"], r["i"]) for r in got if r is not None) == sorted(
        [("a", i) for i in range(200)] + [("b", i) for i in range(300)]
    )


@pytest.mark.asyncio
async def test_bounded_source_ends_on_a_transactional_topic(kafka: Kafka) -> None:
    kafka.create_topic("txn-in", partitions=2)
    producer = Producer(kafka.client_config(**{"transactional.id": "tests-txn-in"}))
    producer.init_transactions(30)
    committed: list[int] = []
    for n, fate in enumerate(["commit", "abort", "commit"]):
        producer.begin_transaction()
        for i in range(n * 100, n * 100 + 100):
            producer.produce("txn-in", orjson.dumps({"id": i, "p": i % 2}), partition=i % 2)
        if fate == "commit":
            producer.commit_transaction(30)
            committed.extend(range(n * 100, n * 100 + 100))
        else:
            producer.flush(30)
            producer.abort_transaction(30)
    source = sources.Kafka("txn-in", bootstrap=kafka.bootstrap, stop_at="latest")
    reader = await opened(source)
    try:
        out = Drained()
        await read_some([reader], out, timeout_s=30)
        assert sorted(out.ids) == committed
        # The splits moved past the last commit marker: at the end offsets.
        assert all(s["offset"] == s["stop"] for s in reader.snapshot(1))
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_new_partitions_are_read_from_earliest_by_discovery_and_after_restore(
    kafka: Kafka,
) -> None:
    kafka.create_topic("growing", partitions=2)
    ids = fill(kafka, "growing", 2, 200)
    source = sources.Kafka("growing", bootstrap=kafka.bootstrap, discovery_interval_ms=200)
    reader = await opened(source)
    try:
        first = Drained()
        await read_some([reader], first, until=200)
        everyone = reader.snapshot(1)
        kafka.admin().create_partitions([NewPartitions("growing", 4)])["growing"].result(30)
        kafka.wait_for(
            lambda: len(kafka.metadata("growing").topics["growing"].partitions) == 4, "4 partitions"
        )
        new = list(range(1000, 1100))
        produce(kafka, "growing", [(2 + i % 2, {"id": i, "p": 2 + i % 2}) for i in new])
        found = Drained()
        await read_some([reader], found, until=100)
        assert sorted(found.ids) == new
        assert sorted(reader.split_ids() or []) == [f"growing-{p}" for p in range(4)]
    finally:
        reader.close()
    # Restored from the snapshot taken before the partitions were added.
    restored = await opened(source, restored=RestoredSplits(mine=everyone, everyone=everyone))
    try:
        again = Drained()
        await read_some([restored], again, until=100)
        assert sorted(again.ids) == new
        assert sorted(first.ids) == ids
    finally:
        restored.close()


@pytest.mark.asyncio
async def test_start_positions(kafka: Kafka) -> None:
    kafka.create_topic("starts", partitions=2)
    old = fill(kafka, "starts", 2, 100)
    # latest: only what comes after the start
    reader = await opened(sources.Kafka("starts", bootstrap=kafka.bootstrap, start="latest"))
    try:
        new = fill(kafka, "starts", 2, 10, first=500)
        out = Drained()
        await read_some([reader], out, until=10)
        assert sorted(out.ids) == new
    finally:
        reader.close()
    # a dict: partition 0 from offset 40, partition 1 (not listed) from earliest
    reader = await opened(
        sources.Kafka("starts", bootstrap=kafka.bootstrap, start={0: 40}, stop_at="latest")
    )
    try:
        out = Drained()
        await read_some([reader], out)
        expected = [i for i in old if i % 2 == 1] + new + [i for i in old if i % 2 == 0][40:]
        assert sorted(out.ids) == sorted(expected)
    finally:
        reader.close()
    # a timestamp: the records at or after it
    kafka.create_topic("stamps", partitions=1)
    produce(kafka, "stamps", [(0, {"id": i, "p": 0}) for i in range(5)], timestamp=1_000_000)
    produce(kafka, "stamps", [(0, {"id": i, "p": 0}) for i in range(5, 9)], timestamp=2_000_000)
    reader = await opened(
        sources.Kafka("stamps", bootstrap=kafka.bootstrap, start=1_500_000, stop_at="latest")
    )
    try:
        out = Drained()
        await read_some([reader], out)
        assert sorted(out.ids) == [5, 6, 7, 8]
    finally:
        reader.close()
    # committed: the group's offsets of the last completed checkpoint
    source = sources.Kafka("starts", bootstrap=kafka.bootstrap, group="starts-group")
    reader = await opened(source)
    try:
        first = Drained()
        await read_some([reader], first, until=60)
        reader.snapshot(7)
        await read_some([reader], first, until=80)  # after the checkpoint: read again
        reader.notify_checkpoint_complete(7)
        await reader.read(1)
    finally:
        reader.close()
    check = Consumer(kafka.client_config(**{"group.id": "starts-group"}))
    try:
        kafka.wait_for(
            lambda: (
                sum(
                    tp.offset
                    for tp in check.committed(
                        [TopicPartition("starts", 0), TopicPartition("starts", 1)], timeout=5
                    )
                    if tp.offset > 0
                )
                == 60
            ),
            "the group's offsets of checkpoint 7",
        )
    finally:
        check.close()
    reader = await opened(
        sources.Kafka(
            "starts",
            bootstrap=kafka.bootstrap,
            group="starts-group",
            start="committed",
            stop_at="latest",
        )
    )
    try:
        rest = Drained()
        await read_some([reader], rest)
        assert Counter(first.ids[:60] + rest.ids) == Counter(old + new)
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_unreachable_bootstrap_fails_within_the_deadline() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    reader = sources.Kafka("t", bootstrap=bootstrap).create_reader(ctx())
    reader.metadata_timeout_s = 2.0
    reader.initialize(None)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectorError) as caught:
            await reader.open()
    finally:
        reader.close()
    assert time.monotonic() - started < 6
    assert bootstrap in str(caught.value) and "2 s" in str(caught.value)


@pytest.mark.asyncio
async def test_missing_topic_is_named(kafka: Kafka) -> None:
    reader = sources.Kafka(["starts", "no-such-topic"], bootstrap=kafka.bootstrap).create_reader(
        ctx()
    )
    reader.initialize(None)
    try:
        with pytest.raises(GraphError, match="no-such-topic") as caught:
            await reader.open()
    finally:
        reader.close()
    assert kafka.bootstrap in str(caught.value)


@pytest.mark.asyncio
async def test_a_value_that_is_not_json_is_rejected_with_where_it_was(kafka: Kafka) -> None:
    kafka.create_topic("garbage", partitions=1)
    produce(kafka, "garbage", [(0, {"id": 0, "p": 0}), (0, b"{not json"), (0, {"id": 2, "p": 0})])
    reader = await opened(sources.Kafka("garbage", bootstrap=kafka.bootstrap, stop_at="latest"))
    try:
        records: list[Any] = []
        rejected = []
        with anyio.fail_after(30):
            while (batch := await reader.read(10)) is not None:
                records.extend(batch)
                rejected.extend(reader.take_rejected())
        assert [r["id"] for r in records] == [0, 2]
        [error] = rejected
        assert error.origin == {"topic": "garbage", "partition": 0, "offset": 1}
        assert error.raw == "{not json"
        assert "'garbage' partition 0 offset 1" in str(error)
        assert reader.snapshot(1) == [{"topic": "garbage", "partition": 0, "offset": 3, "stop": 3}]
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_keys_and_text_values(kafka: Kafka) -> None:
    kafka.create_topic("keyed", partitions=1)
    produce(kafka, "keyed", [(0, b"hello")], key=b"k1")
    produce(kafka, "keyed", [(0, b"bye")])
    source = sources.Kafka(
        "keyed", bootstrap=kafka.bootstrap, value_format="text", key="text", stop_at="latest"
    )
    reader = await opened(source)
    try:
        with anyio.fail_after(30):
            got: list[Any] = []
            while (batch := await reader.read(10)) is not None:
                got.extend(batch)
        assert got == [{"key": "k1", "value": "hello"}, {"key": None, "value": "bye"}]
    finally:
        reader.close()


def test_descriptions_check_their_settings() -> None:
    with pytest.raises(GraphError, match="exactly one of topics and pattern"):
        sources.Kafka(bootstrap="h:1")
    with pytest.raises(ValueError, match="bootstrap"):
        sources.Kafka("t", bootstrap="nohost")
    with pytest.raises(ValueError, match="start"):
        sources.Kafka("t", bootstrap="h:1", start="beginning")
    with pytest.raises(GraphError, match="needs group"):
        sources.Kafka("t", bootstrap="h:1", start="committed")
    with pytest.raises(ValueError, match="value_format"):
        sources.Kafka("t", bootstrap="h:1", value_format="avro")
    with pytest.raises(ValueError, match="semantic"):
        sinks.Kafka("t", bootstrap="h:1", semantic="maybe")
    with pytest.raises(TypeError, match="config"):
        sinks.Kafka("t", bootstrap="h:1", config={"acks": ["all"]})
    assert sources.Kafka(pattern="a.*", bootstrap="h:1").describe()["pattern"] == "a.*"


# -- the sink ---------------------------------------------------------------------------


def values(kafka: Kafka, topic: str) -> Counter[int]:
    return Counter(
        orjson.loads(v)["id"] for _, _, _, v in read_topic(kafka, topic) if v is not None
    )


@pytest.mark.asyncio
async def test_at_least_once_sink_writes_everything(kafka: Kafka) -> None:
    kafka.create_topic("out-alo", partitions=3)
    sink = sinks.Kafka("out-alo", bootstrap=kafka.bootstrap, key="user", semantic="at_least_once")
    assert sink.create_committer(ctx()) is None
    writer = sink.create_writer(ctx())
    await writer.open()
    try:
        for start in range(0, 20_000, 1000):
            writer.write([{"id": i, "user": f"u{i % 7}"} for i in range(start, start + 1000)])
            await writer.wait_writable()
        await writer.flush()
        with pytest.raises(EncodingError, match="out-alo"):
            writer.write([{"id": 1, "user": "u", "bad": object()}])
    finally:
        writer.close()
    records = read_topic(kafka, "out-alo")
    assert Counter(orjson.loads(v)["id"] for *_, v in records if v) == Counter(range(20_000))
    # one key, one partition
    by_key: dict[bytes | None, set[int]] = {}
    for partition, _, key, _ in records:
        by_key.setdefault(key, set()).add(partition)
    assert len(by_key) == 7 and all(len(p) == 1 for p in by_key.values())


def committable(writer: Any, records: list[Any], checkpoint: int | str) -> dict[str, Any]:
    writer.write(records)
    made = writer.prepare_commit(f"t-{checkpoint}")
    assert made is not None
    return orjson.loads(orjson.dumps({**made, "checkpoint": checkpoint, "job": "job-1"}))


@pytest.mark.asyncio
async def test_exactly_once_sink_commits_each_checkpoint_once(kafka: Kafka) -> None:
    kafka.create_topic("out-eo", partitions=2)
    sink = sinks.Kafka("out-eo", bootstrap=kafka.bootstrap, key=lambda r: r["id"] % 5)
    writer = sink.create_writer(ctx())
    await writer.open()
    one = committable(writer, [{"id": i} for i in range(1000)], 1)
    assert one["owner"] == transactional_id(ctx()) == "mesh-job-1-kafka-op-0"
    assert writer.prepare_commit("t-x") is None  # nothing since
    assert values(kafka, "out-eo") == Counter()  # nothing is written before the commit
    committer = sink.create_committer(ctx())
    assert committer is not None
    await committer.open()
    try:
        await committer.commit(one)
        assert values(kafka, "out-eo") == Counter(range(1000))
        await committer.commit(one)  # again: already there
        two = committable(writer, [{"id": i} for i in range(1000, 1500)], 2)
        end = committable(writer, [{"id": i} for i in range(1500, 1600)], "end")
        await committer.commit(two)
        await committer.commit(end)
    finally:
        committer.close()
    # A new committer (a restarted job) commits the restored committables again.
    again = sink.create_committer(ctx())
    assert again is not None
    try:
        for c in (one, two, end):
            await again.commit(c)
    finally:
        again.close()
    assert values(kafka, "out-eo") == Counter(range(1600))
    writer.close()


@pytest.mark.asyncio
async def test_exactly_once_bytes_and_text(kafka: Kafka) -> None:
    kafka.create_topic("out-bytes", partitions=1)
    sink = sinks.Kafka(
        "out-bytes", bootstrap=kafka.bootstrap, value_format="bytes", key=lambda r: r[:1]
    )
    writer = sink.create_writer(ctx())
    c = committable(writer, [b"\xff\x00raw", b"ok"], 1)
    committer = sink.create_committer(ctx())
    assert committer is not None
    try:
        await committer.commit(c)
    finally:
        committer.close()
    assert [(k, v) for *_, k, v in read_topic(kafka, "out-bytes")] == [
        (b"\xff", b"\xff\x00raw"),
        (b"o", b"ok"),
    ]


@pytest.mark.asyncio
async def test_a_zombie_committer_is_fenced(kafka: Kafka) -> None:
    kafka.create_topic("out-zombie", partitions=1)
    sink = sinks.Kafka("out-zombie", bootstrap=kafka.bootstrap)
    writer = sink.create_writer(ctx())
    old, new = sink.create_committer(ctx()), sink.create_committer(ctx())
    assert old is not None and new is not None
    try:
        await old.commit(committable(writer, [{"id": 1}], 1))
        await new.commit(committable(writer, [{"id": 2}], 2))  # a new attempt: fences the old
        with pytest.raises(StateError) as caught:
            await old.commit(committable(writer, [{"id": 3}], 3))
        message = str(caught.value)
        assert "mesh-job-1-kafka-op-0" in message and "out-zombie" in message
        assert "took over" in message
        await new.commit(committable(writer, [{"id": 3}], 3))
    finally:
        old.close()
        new.close()
    assert values(kafka, "out-zombie") == Counter([1, 2, 3])


@pytest.mark.asyncio
async def test_an_expired_transaction_is_a_clear_error_and_the_next_commit_writes_once(
    kafka: Kafka,
) -> None:
    kafka.create_topic("out-expired", partitions=1)
    sink = sinks.Kafka("out-expired", bootstrap=kafka.bootstrap, transaction_timeout_ms=1000)
    writer = sink.create_writer(ctx())
    made = committable(writer, [{"id": i} for i in range(100)], 1)
    committer = sink.create_committer(ctx())
    assert isinstance(committer, KafkaCommitter)
    watcher = Consumer(
        kafka.client_config(**{"group.id": "watch", "isolation.level": "read_uncommitted"})
    )

    def outlast_the_timeout(owner: str) -> None:
        # Wait until the broker aborted the transaction (it checks every 10 s): its
        # abort marker then follows the 100 records.
        deadline = time.monotonic() + 60
        while (
            watcher.get_watermark_offsets(TopicPartition("out-expired", 0), 5, cached=False)[1]
            <= 100
        ):
            assert time.monotonic() < deadline, "the broker did not abort the transaction"
            time.sleep(0.2)

    committer._in_transaction = outlast_the_timeout
    try:
        with pytest.raises(StateError) as caught:
            await committer.commit(made)
        message = str(caught.value)
        assert "longer than transaction_timeout_ms=1000" in message and "out-expired" in message
        assert "mesh-job-1-kafka-op-0" in message
        committer._in_transaction = None
        await committer.commit(made)
        await committer.commit(made)
    finally:
        committer.close()
        watcher.close()
    assert values(kafka, "out-expired") == Counter(range(100))


@pytest.mark.asyncio
async def test_a_commit_stuck_in_the_client_fails_in_bounded_time_and_the_next_writes_once(
    kafka: Kafka,
) -> None:
    """A commit whose client call does not return (as a transaction caught by a broker
    failover can) fails with a clear error once its bound passed, instead of holding the
    subtask; the next commit, under the same transactional id, fences it and writes the
    records once."""
    kafka.create_topic("out-stuck", partitions=1)
    sink = sinks.Kafka("out-stuck", bootstrap=kafka.bootstrap, transaction_timeout_ms=2000)
    writer = sink.create_writer(ctx())
    first = committable(writer, [{"id": i} for i in range(50)], 1)
    second = committable(writer, [{"id": i} for i in range(50, 100)], 2)
    committer = sink.create_committer(ctx())
    assert isinstance(committer, KafkaCommitter)
    release = threading.Event()
    try:
        await committer.commit(first)  # the producer is up, as in a running job
        committer.timeout_s = 1.0
        assert committer.commit_limit_s == 6.0
        committer._in_transaction = lambda owner: release.wait(60)
        began = time.monotonic()
        with pytest.raises(StateError) as caught:
            await committer.commit(second)
        waited = time.monotonic() - began
        assert 6.0 <= waited < 12.0, waited
        message = str(caught.value)
        assert "checkpoint 2" in message and "did not finish within 6 s" in message, message
        assert "mesh-job-1-kafka-op-0" in message and "transaction_timeout_ms=2000" in message
        committer._in_transaction = None
        committer.timeout_s = 10.0  # the brokers take a moment to abort what it left open
        await committer.commit(second)  # fences the stuck producer, aborting its transaction
        release.set()  # the stuck thread goes on: it is fenced, and writes nothing
        await committer.commit(first)
        await committer.commit(second)
    finally:
        release.set()
        committer.close()
    assert values(kafka, "out-stuck") == Counter(range(100))


def test_without_confluent_kafka_the_descriptions_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "confluent_kafka" else real(name, *a),
    )
    with pytest.raises(GraphError, match=r"sources.Kafka needs the confluent-kafka package"):
        sources.Kafka("t", bootstrap="h:1")
    with pytest.raises(GraphError, match=r"sinks.Kafka needs .*pip install"):
        sinks.Kafka("t", bootstrap="h:1")


def test_job_files_do_not_import_the_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from mesh.api import sinks, sources; "
        "sources.Kafka('t', bootstrap='h:1'); sinks.Kafka('t', bootstrap='h:1'); "
        "print('confluent_kafka' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
