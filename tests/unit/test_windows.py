"""The window operator and keyed timers, driven by hand (no sockets): records,
watermarks and a manual clock in, window results out."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import Aggregate, Job, KeyedProcessFunction, sinks, sources, triggers, windows
from mesh.errors import GraphError
from mesh.graph.keygroups import KeyGroupRange
from mesh.node.operators.base import RestoredState
from mesh.node.operators.factory import build_operator
from mesh.node.operators.records import RecordFailure
from mesh.state.backends import MemoryBackend
from mesh.state.keys import KeyCodec
from mesh.state.snapshot import create_snapshot_file
from mesh.time.clock import ManualClock
from mesh.time.watermarks import MAX_WATERMARK
from tests.windowing import batch_windows, by_window, drive, window_operator

# -- event-time windows against a batch computation ---------------------------------------------


@st.composite
def disordered(draw: Any, max_delay: int) -> list[dict[str, Any]]:
    """Events whose disorder stays within ``max_delay``: each is at most that far behind
    the largest timestamp before it."""
    steps = draw(st.lists(st.integers(0, 400), min_size=1, max_size=120))
    lags = draw(st.lists(st.integers(0, max_delay), min_size=len(steps), max_size=len(steps)))
    keys = draw(st.lists(st.sampled_from("abc"), min_size=len(steps), max_size=len(steps)))
    events, clock, highest = [], 0, None
    for step, lag, key in zip(steps, lags, keys, strict=True):
        clock += step
        ts = clock - lag
        if highest is not None:
            ts = max(ts, highest - max_delay)
        highest = ts if highest is None else max(highest, ts)
        events.append({"k": key, "ts": ts, "v": step % 7})
    return events


def _run_in_batches(op: Any, events: list[dict[str, Any]], cuts: list[int], delay: int) -> Any:
    """Feed ``events`` in batches cut at ``cuts``, each followed by the watermark a
    bounded-out-of-orderness source would send, then the end of input."""
    steps: list[tuple[str, Any]] = []
    bounds = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    highest = None
    for lo, hi in itertools.pairwise(bounds):
        batch = events[lo:hi]
        steps.append(("records", batch))
        top = max(e["ts"] for e in batch)
        highest = top if highest is None else max(highest, top)
        steps.append(("watermark", highest - delay - 1))
    steps.append(("watermark", MAX_WATERMARK))
    return drive(op, steps)


ASSIGNERS = {
    "tumbling": (lambda: windows.Tumbling(1000), {"size": 1000}),
    "sliding": (lambda: windows.Sliding(1000, 250), {"size": 1000, "slide": 250}),
    "session": (lambda: windows.Session(300), {"gap": 300}),
}


@pytest.mark.parametrize("kind", sorted(ASSIGNERS))
@given(data=st.data())
def test_windowed_counts_and_sums_equal_a_batch_computation(kind: str, data: Any) -> None:
    delay = data.draw(st.integers(0, 1500))
    events = data.draw(disordered(delay))
    cuts = data.draw(st.lists(st.integers(0, 200), max_size=8))
    make, params = ASSIGNERS[kind]
    counts, side = _run_in_batches(
        window_operator(lambda w: w.count(), assigner=make()), events, cuts, delay
    )
    assert not side
    assert by_window(counts) == batch_windows(events, kind, **params)
    sums, _ = _run_in_batches(
        window_operator(
            lambda w: w.reduce(lambda a, b: {**a, "v": a["v"] + b["v"]}), assigner=make()
        ),
        events,
        cuts,
        delay,
    )
    got = {index: value["v"] for index, value in by_window(sums, "value").items()}
    assert got == batch_windows(events, kind, value=lambda e: e["v"], **params)


@given(data=st.data())
def test_the_tumbling_hot_path_emits_what_the_general_path_does_in_the_same_order(
    data: Any,
) -> None:
    delay = data.draw(st.integers(0, 1500))
    events = data.draw(disordered(delay))
    cuts = data.draw(st.lists(st.integers(0, 200), max_size=8))
    lateness = data.draw(st.sampled_from([0, 300]))
    runs = []
    for fast in (True, False):
        op = window_operator(
            lambda w: w.allowed_lateness(lateness).late_output("late").count(),
            assigner=windows.Tumbling(1000),
        )
        assert op._fast
        op._fast = fast  # the general path handles every window the same way
        # Watermarks with less delay than the disorder: late records, refirings.
        runs.append(_run_in_batches(op, events, cuts, delay // 2))
    assert runs[0] == runs[1]


# -- lateness ------------------------------------------------------------------------------------


def _at(*stamps: int, key: str = "a") -> list[dict[str, Any]]:
    return [{"k": key, "ts": ts} for ts in stamps]


def test_late_records_within_the_lateness_refire_and_later_ones_go_to_the_side_output() -> None:
    op = window_operator(
        lambda w: w.allowed_lateness(5).late_output("late").count(),
        assigner=windows.Tumbling(10),
    )
    out, side = drive(
        op,
        [
            ("records", _at(1, 5, 12)),
            ("watermark", 9),  # [0, 10) fires with 2
            ("records", _at(3)),  # late but within the lateness: fires again with 3
            ("watermark", 15),  # [0, 10) is cleaned up at 9 + 5
            ("records", _at(2, 14)),  # 2 is too late now; 14 is on time
            ("watermark", MAX_WATERMARK),
        ],
    )
    assert out == [
        {"key": "a", "window_start": 0, "window_end": 10, "count": 2},
        {"key": "a", "window_start": 0, "window_end": 10, "count": 3},
        {"key": "a", "window_start": 10, "window_end": 20, "count": 2},
    ]
    assert side == [("late", {"k": "a", "ts": 2})]
    assert (op.late_records, op.late_dropped) == (1, 0)


def test_late_records_without_a_side_output_are_dropped_and_counted() -> None:
    op = window_operator(lambda w: w.count(), assigner=windows.Tumbling(10))
    out, side = drive(op, [("records", _at(1, 12)), ("watermark", 11), ("records", _at(4, 9, 15))])
    assert side == []
    assert (op.late_records, op.late_dropped) == (2, 2)
    assert out == [{"key": "a", "window_start": 0, "window_end": 10, "count": 1}]


def test_a_late_record_that_bridges_two_sessions_merges_them_and_refires() -> None:
    op = window_operator(lambda w: w.allowed_lateness(100).count(), assigner=windows.Session(10))
    out, _ = drive(
        op,
        [
            ("records", _at(0, 18)),
            ("watermark", 40),  # both sessions fired: [0, 10) and [18, 28)
            ("records", _at(9)),  # within the lateness: [9, 19) bridges them
            ("watermark", MAX_WATERMARK),
        ],
    )
    assert out == [
        {"key": "a", "window_start": 0, "window_end": 10, "count": 1},
        {"key": "a", "window_start": 18, "window_end": 28, "count": 1},
        {"key": "a", "window_start": 0, "window_end": 28, "count": 3},
    ]


# -- window functions and triggers -----------------------------------------------------------------


class Mean(Aggregate):
    def create(self) -> Any:
        return [0, 0]

    def add(self, acc: Any, record: Any) -> Any:
        return [acc[0] + record["ts"], acc[1] + 1]

    def merge(self, a: Any, b: Any) -> Any:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc: Any) -> Any:
        return acc[0] / acc[1]


def test_aggregate_and_process_window_functions() -> None:
    steps = [("records", _at(2, 4, 13)), ("watermark", MAX_WATERMARK)]
    out, _ = drive(
        window_operator(lambda w: w.aggregate(Mean()), assigner=windows.Tumbling(10)), steps
    )
    assert [(r["window_start"], r["value"]) for r in out] == [(0, 3.0), (10, 13.0)]

    def spans(key: Any, window: windows.Window, records: list[Any]) -> Any:
        yield {"key": key, "start": window.start, "ts": sorted(r["ts"] for r in records)}

    out, _ = drive(
        window_operator(lambda w: w.process(spans), assigner=windows.Tumbling(10)), steps
    )
    assert out == [{"key": "a", "start": 0, "ts": [2, 4]}, {"key": "a", "start": 10, "ts": [13]}]


def test_a_global_window_with_a_count_trigger_fires_every_n_and_the_rest_at_the_end() -> None:
    op = window_operator(lambda w: w.count(), assigner=windows.Global(triggers.Count(3)))
    out, _ = drive(
        op, [("records", _at(*range(7)) + _at(1, key="b")), ("watermark", MAX_WATERMARK)]
    )
    assert [(r["key"], r["count"]) for r in out] == [("a", 3), ("a", 3), ("a", 1), ("b", 1)]
    assert out[0]["window_start"] is None and out[0]["window_end"] is None


def test_session_aggregates_need_merge() -> None:
    class NoMerge(Aggregate):
        def create(self) -> Any:
            return 0

        def add(self, acc: Any, record: Any) -> Any:
            return acc + 1

    job = Job("j")
    keyed = job.source(sources.Collection([1])).key_by(lambda r: r)
    with pytest.raises(GraphError, match="NoMerge must implement merge"):
        keyed.window(windows.Session("1s")).aggregate(NoMerge())


def test_event_time_windows_need_timestamped_records() -> None:
    job = Job("j")
    keyed = job.source(sources.Collection([1])).key_by(lambda r: r)
    keyed.window(windows.Tumbling("1s")).count().sink(sinks.Collect())
    with pytest.raises(GraphError, match="event-time windows need timestamped records"):
        job.build()


def test_a_window_function_that_raises_names_the_record_and_keeps_state() -> None:
    def picky(a: Any, b: Any) -> Any:
        if b["ts"] == 7:
            raise ValueError("no sevens")
        return a

    op = window_operator(lambda w: w.reduce(picky), assigner=windows.Sliding(10, 5))
    with pytest.raises(RecordFailure, match="no sevens") as info:
        op.process_timed(_at(1, 6, 7, 8), [1, 6, 7, 8])
    assert info.value.index == 2
    # The windows hold records 1 and 6 only: nothing of 7 was applied.
    out, _ = drive(op, [("watermark", MAX_WATERMARK)])
    assert sorted((r["window_start"], r["value"]["ts"]) for r in out) == [(-5, 1), (0, 1), (5, 6)]


# -- processing time ----------------------------------------------------------------------


def test_processing_time_windows_fire_by_the_clock() -> None:
    clock = ManualClock(1_000)
    op = window_operator(
        lambda w: w.count(), assigner=windows.Tumbling(100, processing_time=True), clock=clock
    )
    op.process_timed(_at(5, 6), [0, 0])  # event time is ignored: it is 1000 now
    assert op.next_processing_time() == 1099
    out, _ = drive(op, [("clock", 1050)])
    assert out == []
    clock.set(1100)
    op.process_timed(_at(7), [0])
    out, _ = drive(op, [("clock", 1100)])
    assert out == [{"key": "a", "window_start": 1000, "window_end": 1100, "count": 2}]
    # The end of input flushes the window still open.
    out, _ = drive(op, [("watermark", MAX_WATERMARK)])
    assert out == [{"key": "a", "window_start": 1100, "window_end": 1200, "count": 1}]


def test_a_processing_time_trigger_fires_early_results() -> None:
    clock = ManualClock(0)
    op = window_operator(
        lambda w: w.trigger(triggers.ProcessingTime(every=50)).count(),
        assigner=windows.Tumbling(1000),
        clock=clock,
    )
    steps: list[tuple[str, Any]] = [("records", _at(1, 2)), ("clock", 50)]
    steps += [("clock", 100), ("records", _at(3)), ("clock", 150), ("watermark", 999)]
    out, _ = drive(op, steps)
    # Early at 50 with 2, nothing new at 100, early at 150 with 3, final at the end: 3 is
    # not pending any more, so the end does not repeat it.
    assert [r["count"] for r in out] == [2, 3]


# -- checkpoints --------------------------------------------------------------------------


def _snapshot_and_restore(op: Any, tmp_path: Path, clock: ManualClock, make: Any) -> Any:
    path = tmp_path / "snap.db"
    create_snapshot_file(path, {"uid": op.spec.uid}, {})
    job = op.backend.begin_snapshot(path)
    job.run()
    job.finish()
    fresh = make(clock)
    restored = RestoredState(
        checkpoint_id=1,
        job_id="j",
        keyed_files=[path],
        key_groups=KeyGroupRange(0, 128),
        operator_state={},
        all_operator_state={},
    )
    anyio.run(fresh.initialize, restored)
    return fresh


def test_window_state_and_timers_survive_a_restore(tmp_path: Path) -> None:
    clock = ManualClock(0)

    def make(c: ManualClock) -> Any:
        return window_operator(
            lambda w: w.allowed_lateness(5).count(), assigner=windows.Tumbling(10), clock=c
        )

    op = make(clock)
    drive(op, [("records", _at(1, 2, 15)), ("watermark", 9)])
    fresh = _snapshot_and_restore(op, tmp_path, clock, make)
    out, _ = drive(fresh, [("records", _at(3)), ("watermark", MAX_WATERMARK)])
    # The restored [0, 10) is still within its lateness, so 3 refires it with all three.
    assert out == [
        {"key": "a", "window_start": 0, "window_end": 10, "count": 3},
        {"key": "a", "window_start": 10, "window_end": 20, "count": 1},
    ]


class Reminder(KeyedProcessFunction):
    def process(self, record: Any, ctx: Any) -> Any:
        ctx.timers.processing_time(ctx.timers.current_processing_time() + 1000)
        ctx.timers.event_time(record["ts"] + 10)
        ctx.timers.event_time(record["ts"] + 10)  # once per key and time
        ctx.state.value("seen").set(record["ts"])
        return []

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield {
            "key": ctx.key,
            "at": timestamp,
            "domain": ctx.time_domain,
            "seen": ctx.state.value("seen").get(),
        }


def _reminder(clock: ManualClock) -> Any:
    job = Job("j")
    stream = job.source(sources.Collection([]))
    stream.key_by(lambda r: r["k"]).process(Reminder()).sink(sinks.Collect())
    built = job.build()
    spec = next(op for op in built.graph.operators if op.kind == "keyed_process")
    op = build_operator(
        spec, built.operator(spec.id), backend=lambda: MemoryBackend(KeyCodec(128), clock)
    )
    op.open()
    anyio.run(op.initialize, None)
    return op


def test_keyed_timers_fire_once_in_both_domains_and_overdue_ones_fire_after_a_restore(
    tmp_path: Path,
) -> None:
    clock = ManualClock(5_000)
    op = _reminder(clock)
    op.process_timed(_at(100), [100])
    out, _ = drive(op, [("watermark", 109)])
    assert out == []
    out, _ = drive(op, [("watermark", 110)])
    assert out == [{"key": "a", "at": 110, "domain": "event_time", "seen": 100}]
    # Checkpoint, then the job is down while the processing-time timer (6000) passes.
    fresh = _snapshot_and_restore(op, tmp_path, clock, _reminder)
    clock.set(9_000)
    assert fresh.next_processing_time() == 6_000
    out, _ = drive(fresh, [("clock", 9_000)])
    assert out == [{"key": "a", "at": 6_000, "domain": "processing_time", "seen": 100}]
    assert fresh.next_processing_time() is None
