"""Per-split watermarks of a source subtask: ``SplitWatermarks`` on its own, and in
``EventTime`` (driven by a manual clock, sending into a real local channel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.graph.logical import OperatorSpec, Partitioning
from mesh.node.runtime.chain import Chain
from mesh.node.runtime.eventtime import EventTime, EventTimeSettings
from mesh.node.runtime.metrics import TaskMetrics
from mesh.node.runtime.output import EdgeWriter
from mesh.time.clock import ManualClock
from mesh.time.watermarks import NO_WATERMARK, Progress, SourceWatermarks, SplitWatermarks
from mesh.transport.frames import FrameKind
from tests.unit.test_channels import wire

# -- the machine -----------------------------------------------------------------------------


def test_the_slowest_split_holds_the_watermark_back() -> None:
    source = SplitWatermarks(100, None, now_ms=0, splits=["a", "b"])
    source.on_records(10_000, now_ms=1, split="a")
    assert source.poll() == Progress()  # b has read nothing: it holds event time back
    assert source.current() == NO_WATERMARK
    source.on_records(2_000, now_ms=2, split="b")
    assert source.poll() == Progress(watermark=2_000 - 100 - 1)
    source.on_records(3_000, now_ms=3, split="b")
    assert source.on_tick(200) == Progress(watermark=3_000 - 100 - 1)
    source.on_records(20_000, now_ms=201, split="a")  # a runs on: b still holds it
    assert source.poll() == Progress()
    assert source.split_watermark("a") == (20_000 - 101, False)


def test_a_silent_split_goes_idle_on_its_own_and_counts_again_when_it_reads() -> None:
    source = SplitWatermarks(0, idle_timeout_ms=1000, now_ms=0, splits=["a", "b"])
    source.on_records(50, now_ms=0, split="b")
    source.on_records(500, now_ms=0, split="a")
    assert source.poll() == Progress(watermark=49)
    source.on_records(900, now_ms=900, split="a")  # only a keeps reading
    assert source.on_tick(999) == Progress()
    # b is silent for the timeout: it holds nothing back, a's watermark goes through.
    assert source.on_tick(1000) == Progress(watermark=899)
    assert not source.idle
    assert source.split_watermark("b") == (49, True)
    # b wakes up with old timestamps: it counts again, but what was sent stays sent.
    assert source.on_records(60, now_ms=1001, split="b") == Progress()
    assert source.poll() == Progress()
    assert source.current() == 59
    assert source.emitted == 899
    source.on_records(950, now_ms=1002, split="b")
    source.on_records(1_000, now_ms=1002, split="a")
    assert source.poll() == Progress(watermark=949)


def test_a_split_that_read_nothing_holds_the_watermark_until_it_is_idle() -> None:
    source = SplitWatermarks(0, idle_timeout_ms=100, now_ms=0, splits=["a", "fresh"])
    source.on_records(10, now_ms=50, split="a")
    assert source.on_tick(60) == Progress()
    source.on_records(20, now_ms=110, split="a")
    assert source.on_tick(120) == Progress(watermark=19)  # "fresh" idle after 100 ms


def test_every_split_idle_makes_the_subtask_idle_and_a_record_wakes_it() -> None:
    source = SplitWatermarks(0, idle_timeout_ms=100, now_ms=0, splits=["a", "b"])
    source.on_records(10, now_ms=0, split="a")
    source.on_records(30, now_ms=50, split="b")
    assert source.poll() == Progress(watermark=9)
    assert source.on_tick(100) == Progress(watermark=29)  # a idle: b's goes through
    assert source.on_tick(150) == Progress(idle=True)  # both idle
    assert source.idle
    assert source.on_tick(500) == Progress()  # says it once
    assert source.on_records(5, now_ms=501, split="a") == Progress(idle=False)
    assert not source.idle
    assert source.poll() == Progress()  # a's 9 is behind what was sent
    assert source.current() == 9


def test_splits_come_and_go() -> None:
    source = SplitWatermarks(0, idle_timeout_ms=None, now_ms=0, splits=["a", "b"])
    source.on_records(100, now_ms=0, split="a")
    source.on_records(10, now_ms=0, split="b")
    assert source.poll() == Progress(watermark=9)
    source.set_splits(["a"], now_ms=5)  # b finished: it holds nothing back any more
    assert source.split_ids == ["a"]
    assert source.poll() == Progress(watermark=99)
    source.set_splits(["a", "c"], now_ms=6)  # a new partition: held until it reads
    source.on_records(200, now_ms=7, split="a")
    assert source.poll() == Progress()
    source.on_records(150, now_ms=8, split="c")
    assert source.poll() == Progress(watermark=149)
    source.set_splits([], now_ms=9)  # no splits: idle
    assert source.on_tick(10) == Progress(idle=True)
    source.set_splits(["d"], now_ms=11)  # a split to read again: active
    assert source.poll() == Progress(idle=False)
    # A split the reader names before it reports it is taken on.
    assert source.on_records(300, now_ms=12, split="e") == Progress()
    assert source.split_ids == ["d", "e"]


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        SplitWatermarks(-1, None, now_ms=0)


def test_one_split_behaves_like_the_subtask_generator() -> None:
    steps = [(0, 5), (100, None), (150, 7), (300, None), (1400, None), (1500, 3), (1600, None)]
    single = SourceWatermarks(2, idle_timeout_ms=1000, now_ms=0)
    split = SplitWatermarks(2, idle_timeout_ms=1000, now_ms=0, splits=["only"])
    for now, ts in steps:
        if ts is None:
            assert split.on_tick(now) == single.on_tick(now)
        else:
            assert split.on_records(ts, now, "only") == single.on_records(ts, now)
            assert split.poll() == single.poll()
        assert (split.emitted, split.idle) == (single.emitted, single.idle)


@dataclass
class _Model:
    max_seen: int | None
    last_active: int
    idle: bool = False


_SPLITS = ["p0", "p1", "p2", "p3"]
_step = st.one_of(
    st.tuples(
        st.just("read"), st.sampled_from(_SPLITS), st.integers(-10_000, 10_000), st.integers(0, 40)
    ),
    st.tuples(st.just("tick"), st.just(""), st.just(0), st.integers(0, 80)),
    st.tuples(st.just("poll"), st.just(""), st.just(0), st.just(0)),
    st.tuples(
        st.just("splits"),
        st.sets(st.sampled_from(_SPLITS)).map(lambda s: ",".join(sorted(s))),
        st.just(0),
        st.integers(0, 40),
    ),
)


@given(
    st.lists(_step, max_size=80),
    st.integers(0, 500),
    st.one_of(st.none(), st.integers(1, 150)),
    st.sets(st.sampled_from(_SPLITS)),
)
def test_split_watermarks_are_monotonic_bounded_by_active_splits_and_idle_iff_all_are(
    steps: list[tuple[str, str, int, int]],
    delay: int,
    timeout: int | None,
    initial: set[str],
) -> None:
    source = SplitWatermarks(delay, timeout, now_ms=0, splits=sorted(initial))
    model = {split: _Model(None, 0) for split in initial}
    now = 0
    last = NO_WATERMARK

    def allowed() -> list[int]:
        """What each active split allows (a split that read nothing: NO_WATERMARK)."""
        return [
            NO_WATERMARK if m.max_seen is None else m.max_seen - delay - 1
            for m in model.values()
            if not m.idle
        ]

    for what, split, ts, dt in steps:
        now += dt
        if what == "read":
            state = model.setdefault(split, _Model(None, now))
            state.max_seen = ts if state.max_seen is None else max(state.max_seen, ts)
            state.last_active, state.idle = now, False
            progress = source.on_records(ts, now, split)
            assert progress.watermark is None
            assert not source.idle  # a split that reads is active: so is the subtask
            continue
        if what == "splits":
            held = split.split(",") if split else []
            model = {s: model.get(s, _Model(None, now)) for s in held}
            source.set_splits(held, now)
            assert sorted(source.split_ids) == sorted(held)
            continue
        if what == "tick":
            for state in model.values():
                if timeout is not None and not state.idle and now - state.last_active >= timeout:
                    state.idle = True
            progress = source.on_tick(now)
        else:
            progress = source.poll()
        active = allowed()
        if progress.watermark is not None:
            assert progress.watermark > last  # never backwards
            # Exactly what the active splits allow: the smallest of them, no more.
            assert active and progress.watermark == min(active)
            last = progress.watermark
        assert source.emitted == last
        # ... and no less: what the active splits allow has gone out.
        if active:
            assert source.emitted >= min(active)
        # Idle iff every split is (or there is none), said when it changes.
        assert source.idle == (not active)
        if progress.idle is not None:
            assert progress.idle == (not active)


# -- in EventTime ----------------------------------------------------------------------------

SPEC = OperatorSpec(id=0, uid="src", name="src", kind="source", parallelism=1, max_parallelism=8)
NEXT = OperatorSpec(id=1, uid="next", name="next", kind="map", parallelism=1, max_parallelism=8)


class _Subtask:
    """A source subtask's ``EventTime``, sending into a local channel."""

    def __init__(self, **settings: Any) -> None:
        self.clock = ManualClock(0)
        self.wiring = wire([0], exclusive=4)
        writer = EdgeWriter(
            producer=SPEC,
            consumer=NEXT,
            partitioning=Partitioning.FORWARD,
            channels=[self.wiring.outs[0]],
            subtask_index=0,
            buffer_records=100,
            timed=True,
        )
        self.time = EventTime(
            EventTimeSettings(timestamp=lambda r: r, **settings),
            chain=Chain([], [writer], {}, subtask_index=0, metrics=TaskMetrics()),
            writers=[writer],
            clock=self.clock,
            source_spec=SPEC,
        )

    async def read(self, split: str | None, *stamps: int) -> None:
        self.time.source_read(list(stamps), split)
        await self.time.source_pushed()

    async def tick(self, ms: int) -> None:
        self.clock.advance(ms)
        await self.time.on_time()

    async def events(self) -> list[tuple[str, int | None]]:
        """The events sent since the last call."""
        got: list[tuple[str, int | None]] = []
        while True:
            with anyio.move_on_after(0.01):
                item = await self.wiring.gate.next()
                assert item is not None
                _, kind, arg, _ = item
                if kind is FrameKind.WATERMARK:
                    got.append(("watermark", arg))
                elif kind is FrameKind.WATERMARK_STATUS:
                    got.append(("idle" if arg else "active", None))
                continue
            return got


def test_event_time_follows_the_slow_split_then_the_fast_one_when_the_slow_one_is_idle() -> None:
    async def scenario() -> None:
        sub = _Subtask(max_delay_ms=100, idle_timeout_ms=1000)
        sub.time.set_splits(["fast", "slow"])
        await sub.read("fast", 50_000, 50_500)
        await sub.read("slow", 1_000)
        # The slow partition is far behind: the subtask's watermark follows it.
        assert await sub.events() == [("watermark", 1_000 - 101)]
        await sub.tick(200)
        await sub.read("fast", 51_000)
        await sub.read("slow", 2_000)
        assert await sub.events() == [("watermark", 2_000 - 101)]
        assert sub.time.watermark == 1_899
        # The slow partition falls silent; the fast one reads on. After idle_timeout the
        # slow one holds nothing back: the watermark follows the fast one.
        for _ in range(5):
            await sub.tick(200)
            await sub.read("fast", 52_000)
        assert await sub.events() == [("watermark", 52_000 - 101)]
        assert sub.time.watermark == 51_899
        # Both silent: the subtask says it is idle, once.
        for _ in range(8):
            await sub.tick(200)
        assert await sub.events() == [("idle", None)]
        assert sub.time.idle
        # A record wakes it up: "active" first, then what the splits allow.
        await sub.read("slow", 60_000)
        await sub.tick(200)
        assert await sub.events() == [("active", None), ("watermark", 60_000 - 101)]

    anyio.run(scenario)


def test_event_time_keeps_one_watermark_without_split_ids_and_takes_over_what_was_sent() -> None:
    async def scenario() -> None:
        sub = _Subtask()
        sub.time.set_splits(None)  # the reader keeps one watermark for the subtask
        await sub.read(None, 500)
        await sub.read("ignored", 700)
        assert await sub.events() == [("watermark", 499), ("watermark", 699)]
        # The reader starts tracking splits: a fresh split holds event time back, and
        # what went out already stays.
        sub.time.set_splits(["a", "b"])
        await sub.read("a", 800)
        assert await sub.events() == []
        await sub.read("b", 600)
        assert await sub.events() == []  # b's 599 is behind what was sent
        await sub.read("b", 900)
        assert await sub.events() == [("watermark", 799)]
        with pytest.raises(ValueError, match="did not name the split"):
            sub.time.source_read([1_000])
        # A finished split holds nothing back; without split ids, one watermark again.
        sub.time.set_splits(["b"])
        await sub.tick(200)
        assert await sub.events() == [("watermark", 899)]
        sub.time.set_splits(None)
        await sub.read(None, 950)
        assert await sub.events() == [("watermark", 949)]

    anyio.run(scenario)


def test_alignment_reports_the_watermark_of_the_slowest_split() -> None:
    reports: list[tuple[int, bool, bool, bool]] = []

    async def scenario() -> None:
        sub = _Subtask(align_group="g", max_drift_ms=10, report=lambda *a: reports.append(a))
        sub.time.set_bound(10_000)  # the coordinator's first bound
        sub.time.set_splits(["a", "b"])
        await sub.read("a", 1_000)
        assert reports[-1] == (NO_WATERMARK, False, False, False)  # b read nothing yet
        await sub.read("b", 100)
        assert reports[-1] == (99, False, False, False)
        assert not sub.time.paused
        await sub.read("b", 10_500)  # b passes the bound, a is the slowest now: read on
        assert not sub.time.paused
        assert reports[-1] == (999, False, False, False)
        await sub.read("a", 10_200)  # the slowest split passed the bound: wait
        assert sub.time.paused
        assert reports[-1] == (10_199, False, False, True)

    anyio.run(scenario)
