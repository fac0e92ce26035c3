"""EdgeWriter: how a chain's output is partitioned over an edge's channels."""

from __future__ import annotations

import collections
from typing import Any

import orjson
import pytest

from mesh import Job, sinks, sources
from mesh.errors import EncodingError, RecordError
from mesh.graph.keygroups import key_group_for, subtask_for_key_group
from mesh.graph.logical import OperatorSpec, Partitioning
from mesh.node.runtime.output import EdgeWriter
from mesh.transport.frames import FrameKind


class RecordingChannel:
    """Stands in for an OutputChannel: remembers what it was asked to send, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.backlog = 0

    def send_data(self, payload: bytes) -> None:
        self.sent.append(("data", orjson.loads(payload)))

    def send_event(self, kind: FrameKind, arg: int = 0, payload: bytes = b"") -> None:
        self.sent.append(("event", kind))

    def records(self) -> list[Any]:
        return [r for what, batch in self.sent if what == "data" for r in batch]


def specs(max_parallelism: int = 128) -> tuple[OperatorSpec, OperatorSpec]:
    job = Job("edge", parallelism=3, max_parallelism=max_parallelism)
    job.source(sources.Collection([1])).map(lambda x: x).uid("producer").rebalance().sink(
        sinks.Print()
    ).uid("consumer")
    graph = job.build().graph
    return graph.operator(1), graph.operator(2)


def writer(
    partitioning: Partitioning, n: int, *, buffer_records: int = 1000, key_fn: Any = None
) -> tuple[EdgeWriter, list[RecordingChannel]]:
    producer, consumer = specs()
    channels = [RecordingChannel() for _ in range(n)]
    edge = EdgeWriter(
        producer=producer,
        consumer=consumer,
        partitioning=partitioning,
        channels=channels,  # type: ignore[arg-type]
        subtask_index=0,
        buffer_records=buffer_records,
        key_fn=key_fn,
    )
    return edge, channels


def test_hash_sends_every_key_to_the_owner_of_its_key_group() -> None:
    edge, channels = writer(Partitioning.HASH, 3, key_fn=lambda r: r["k"])
    records = [{"k": f"key{i % 50}", "i": i} for i in range(2000)]
    edge.write(records[:700])
    edge.write(records[700:])
    edge.flush()
    for index, channel in enumerate(channels):
        for record in channel.records():
            owner = subtask_for_key_group(key_group_for(record["k"], 128), 3, 128)
            assert owner == index
    assert sorted(r["i"] for c in channels for r in c.records()) == list(range(2000))


def test_rebalance_deals_records_round_robin_across_batches() -> None:
    edge, channels = writer(Partitioning.REBALANCE, 3)
    edge.write(list(range(5)))
    edge.write(list(range(5, 11)))
    edge.flush()
    assert [c.records() for c in channels] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]


def test_broadcast_gives_every_channel_everything() -> None:
    edge, channels = writer(Partitioning.BROADCAST, 4)
    edge.write(list(range(10)))
    edge.flush()
    assert all(c.records() == list(range(10)) for c in channels)


def test_shuffle_spreads_records_and_loses_none() -> None:
    edge, channels = writer(Partitioning.SHUFFLE, 4)
    edge.write(list(range(4000)))
    edge.flush()
    sizes = [len(c.records()) for c in channels]
    assert sum(sizes) == 4000 and min(sizes) > 800
    assert sorted(r for c in channels for r in c.records()) == list(range(4000))


def test_a_full_buffer_is_sent_at_once_and_the_rest_waits_for_flush() -> None:
    edge, channels = writer(Partitioning.FORWARD, 1, buffer_records=100)
    edge.write(list(range(250)))
    assert [len(batch) for _, batch in channels[0].sent] == [250]  # over the limit: all of it
    edge.write(list(range(30)))
    assert len(channels[0].sent) == 1  # below the limit: held back
    edge.flush()
    assert [len(batch) for _, batch in channels[0].sent] == [250, 30]


def test_an_event_follows_the_records_written_before_it() -> None:
    edge, channels = writer(Partitioning.REBALANCE, 2)
    edge.write([1, 2, 3])
    edge.emit_event(FrameKind.END_OF_PARTITION)
    for channel in channels:
        assert channel.sent[-1] == ("event", FrameKind.END_OF_PARTITION)
        assert channel.sent[0][0] == "data"


def test_a_key_function_raising_names_the_consumer_and_the_record() -> None:
    edge, _ = writer(Partitioning.HASH, 2, key_fn=lambda r: r["user"])
    with pytest.raises(RecordError, match=r"key_by function for operator 'consumer'.*42"):
        edge.write([{"user": "a"}, 42])


def test_unencodable_records_name_the_producer_and_the_type() -> None:
    edge, _ = writer(Partitioning.FORWARD, 1, buffer_records=1)
    with pytest.raises(EncodingError, match=r"operator 'producer'.*record of type set"):
        edge.write([{1, 2}])


def test_hash_partitioning_balances_many_keys() -> None:
    edge, channels = writer(Partitioning.HASH, 4, key_fn=lambda r: r)
    edge.write([f"user-{i}" for i in range(20_000)])
    edge.flush()
    sizes = collections.Counter({i: len(c.records()) for i, c in enumerate(channels)})
    assert min(sizes.values()) > 0.15 * 20_000
