"""Sampled record traces without sockets: which records are sampled, how a writer marks
the buffers a traced record lands in, and how the marks cross the wire."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from mesh.graph.logical import Partitioning
from mesh.node.runtime.output import EdgeWriter
from mesh.node.runtime.record_traces import RecordSampler, traced_runs
from mesh.transport.frames import FrameKind, decode_header, encode_header
from mesh.transport.traced import (
    MAX_TRACE_MARKS,
    TracedPayload,
    marks_from_ext,
    trace_ext,
)
from tests.unit.test_output import specs

CONTEXT = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
OTHER = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def test_a_sampler_at_one_samples_every_record_across_batches() -> None:
    sampler = RecordSampler(1.0, random.Random(1))
    assert sampler.sampled(3) == [0, 1, 2]
    assert sampler.sampled(1) == [0]


def test_a_sampler_picks_about_its_fraction_and_is_deterministic_for_a_seed() -> None:
    def picks(seed: int) -> list[int]:
        sampler = RecordSampler(0.01, random.Random(seed))
        found = []
        for batch in range(200):  # 200 batches of 1000 records
            found.extend(batch * 1000 + i for i in sampler.sampled(1000))
        return found

    found = picks(7)
    assert 1600 <= len(found) <= 2400  # 2000 expected; far outside 5 sigma otherwise
    assert found == sorted(set(found))
    assert found == picks(7)
    assert found != picks(8)


def test_a_sampler_rejects_a_fraction_outside_zero_to_one() -> None:
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction must be in"):
            RecordSampler(bad, random.Random(1))
    with pytest.raises(ValueError, match="limit must be above zero"):
        RecordSampler(0.5, random.Random(1), 0)


def test_a_limited_sampler_takes_a_seconds_worth_at_once_then_its_rate() -> None:
    sampler = RecordSampler(1.0, random.Random(1), per_second=10)
    assert sampler.sampled(25, now_ms=0) == list(range(10))  # the burst: one second's worth
    assert sampler.sampled(25, now_ms=50) == []  # half a sample earned
    assert sampler.sampled(25, now_ms=300) == [0, 1, 2]  # 0.3 s after the burst: 3
    assert sampler.sampled(25, now_ms=10_000) == list(range(10))  # never more than a burst
    assert sampler.skipped == 15 + 25 + 22 + 15


def test_traced_runs_keep_marks_in_range_and_in_order() -> None:
    marks = [(CONTEXT, 2, 4), (OTHER, 3, 5), (OTHER, 6, 99), (CONTEXT, 99, 100)]
    assert traced_runs(8, marks) == [(2, 4, CONTEXT), (6, 8, OTHER)]


class _Channel:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def send_data(self, payload: bytes) -> None:
        self.payloads.append(payload)


def _writer(partitioning: Partitioning, n: int, **kw: Any) -> tuple[EdgeWriter, list[_Channel]]:
    producer, consumer = specs()
    channels = [_Channel() for _ in range(n)]
    edge = EdgeWriter(
        producer=producer,
        consumer=consumer,
        partitioning=partitioning,
        channels=channels,  # type: ignore[arg-type]
        subtask_index=0,
        buffer_records=kw.pop("buffer_records", 1000),
        **kw,
    )
    return edge, channels


def test_a_writer_marks_the_records_a_traced_push_wrote_in_each_buffer() -> None:
    edge, channels = _writer(Partitioning.HASH, 2, key_fn=lambda r: r)
    edge.write(list(range(10)))
    edge.tracing = CONTEXT
    edge.write([100, 101])  # both keys; each lands in its owner's buffer
    edge.tracing = None
    edge.write(list(range(10, 20)))
    edge.flush()
    marked = [p for ch in channels for p in ch.payloads if type(p) is TracedPayload]
    assert len(marked) == 2
    for payload in marked:
        records = orjson.loads(memoryview(payload))
        ((context, start, end),) = payload.marks
        assert context == CONTEXT
        assert records[start:end] in ([100], [101])


def test_a_full_buffer_goes_out_with_its_marks_and_untraced_ones_stay_plain() -> None:
    edge, channels = _writer(Partitioning.FORWARD, 1, buffer_records=3, timed=True)
    edge.write([1, 2], [10, 20])
    edge.tracing = OTHER
    edge.write([3], [30])  # fills the buffer: sent at once, marked
    edge.tracing = None
    edge.write([4], [40])
    edge.flush()
    first, second = channels[0].payloads
    assert type(first) is TracedPayload and first.marks == [(OTHER, 2, 3)]
    assert orjson.loads(memoryview(first)) == {"t": [10, 20, 30], "r": [1, 2, 3]}
    assert type(second) is bytes


def test_a_buffer_keeps_at_most_its_limit_of_marks() -> None:
    edge, channels = _writer(Partitioning.FORWARD, 1)
    for i in range(MAX_TRACE_MARKS + 5):
        edge.tracing = CONTEXT
        edge.write([i])
    edge.tracing = None
    edge.flush()
    (payload,) = channels[0].payloads
    assert isinstance(payload, TracedPayload)
    assert len(payload.marks) == MAX_TRACE_MARKS
    assert orjson.loads(memoryview(payload)) == list(range(MAX_TRACE_MARKS + 5))


def test_marks_cross_the_wire_in_the_header_extension() -> None:
    payload = TracedPayload.of(b"[1,2,3]", [(CONTEXT, 0, 1), (OTHER, 2, 3)])
    header = decode_header(encode_header(FrameKind.DATA, "job", 0, 4, 9, 0, trace_ext(payload)))
    assert header.ext is not None
    assert marks_from_ext(header.ext) == payload.marks
    assert trace_ext(b"[1]") is None
    assert marks_from_ext({"other": 1}) is None


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ({"trace": "x"}, "must be a list"),
        ({"trace": [[CONTEXT, 0]]}, r"\[context, start, end\]"),
        ({"trace": [[{"a": 1}, 0, 1]]}, "map strings to strings"),
        ({"trace": [[CONTEXT, 3, 1]]}, r"range \[3, 1\) is not valid"),
        ({"trace": [[CONTEXT, 0, 1]] * (MAX_TRACE_MARKS + 1)}, "at most"),
    ],
)
def test_malformed_marks_are_refused_saying_why(ext: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        marks_from_ext(ext)
