"""The pure machines of event time: watermark generation, the input valve, timers and
window assignment."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.time.timers import TimerQueue
from mesh.time.watermarks import (
    MAX_WATERMARK,
    NO_WATERMARK,
    Progress,
    SourceWatermarks,
    WatermarkValve,
)
from mesh.time.windows import merge_sessions, sliding_starts, tumbling_start

# -- source watermarks ---------------------------------------------------------------------


def test_the_watermark_trails_the_largest_timestamp_by_the_delay() -> None:
    source = SourceWatermarks(2000, None, now_ms=0)
    assert source.on_tick(0) == Progress()  # nothing read yet: no watermark
    source.on_records(10_000, now_ms=1)
    assert source.on_tick(200) == Progress(watermark=10_000 - 2000 - 1)
    source.on_records(9_000, now_ms=300)  # out of order: the maximum stays
    assert source.on_tick(400) == Progress()  # nothing new to say
    source.on_records(12_000, now_ms=450)
    assert source.poll() == Progress(watermark=9_999)


def test_a_silent_source_becomes_idle_and_wakes_up_with_its_next_record() -> None:
    source = SourceWatermarks(0, idle_timeout_ms=1000, now_ms=0)
    source.on_records(5, now_ms=100)
    assert source.on_tick(200) == Progress(watermark=4)
    assert source.on_tick(1099) == Progress()
    assert source.on_tick(1100) == Progress(idle=True)
    assert source.on_tick(5000) == Progress()  # stays idle, says nothing
    assert source.on_records(7, now_ms=5001) == Progress(idle=False)
    assert source.on_tick(5002) == Progress(watermark=6)


@given(
    st.lists(
        st.tuples(st.sampled_from(["read", "tick"]), st.integers(-(10**6), 10**6)), max_size=60
    ),
    st.integers(0, 5000),
)
def test_source_watermarks_never_go_backwards(steps: list[tuple[str, int]], delay: int) -> None:
    source = SourceWatermarks(delay, idle_timeout_ms=50, now_ms=0)
    last = NO_WATERMARK
    highest = None
    for now, (what, value) in enumerate(steps):
        if what == "read":
            source.on_records(value, now_ms=now * 10)
            highest = value if highest is None else max(highest, value)
            continue
        progress = source.on_tick(now * 10)
        if progress.watermark is not None:
            assert progress.watermark > last
            assert highest is not None and progress.watermark == highest - delay - 1
            last = progress.watermark


# -- the valve -------------------------------------------------------------------------------


def test_the_valve_takes_the_minimum_and_skips_idle_channels() -> None:
    valve = WatermarkValve([0, 1, 2])
    assert valve.on_watermark(0, 100) == Progress()
    assert valve.on_watermark(1, 50) == Progress()
    assert valve.on_watermark(2, 70) == Progress(watermark=50)
    assert valve.on_watermark(1, 80) == Progress(watermark=70)
    # Channel 2 falls silent: it no longer holds back the others.
    assert valve.on_status(2, True) == Progress(watermark=80)
    # It wakes up and counts again: the output waits for it (never goes back).
    assert valve.on_status(2, False) == Progress()
    assert valve.on_watermark(0, 200) == Progress()
    assert valve.on_watermark(1, 200) == Progress()
    assert valve.on_watermark(2, 150) == Progress(watermark=150)


def test_all_idle_makes_the_subtask_idle_with_the_largest_watermark() -> None:
    valve = WatermarkValve([0, 1])
    valve.on_watermark(0, 10)
    valve.on_watermark(1, 30)
    assert valve.on_status(0, True) == Progress(watermark=30)
    assert valve.on_status(1, True) == Progress(idle=True)
    assert valve.idle
    assert valve.on_status(1, False) == Progress(idle=False)


def test_ended_channels_count_as_the_end_of_time() -> None:
    valve = WatermarkValve([0, 1])
    valve.on_watermark(0, 10)
    assert valve.on_end(1) == Progress(watermark=10)
    assert valve.on_end(0) == Progress(watermark=MAX_WATERMARK)


def test_a_watermark_from_an_unknown_channel_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown input channel 9"):
        WatermarkValve([0]).on_watermark(9, 1)


_valve_step = st.one_of(
    st.tuples(st.just("wm"), st.integers(0, 3), st.integers(-100, 10_000)),
    st.tuples(st.just("idle"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("end"), st.integers(0, 3), st.just(0)),
)


@given(st.lists(_valve_step, max_size=80))
def test_valve_output_is_monotonic_and_never_passes_an_active_channel(
    steps: list[tuple[str, int, Any]],
) -> None:
    valve = WatermarkValve([0, 1, 2, 3])
    marks = dict.fromkeys(range(4), NO_WATERMARK)
    idle = dict.fromkeys(range(4), False)
    ended: set[int] = set()
    last = NO_WATERMARK
    for what, channel, arg in steps:
        if channel in ended:
            continue
        if what == "wm":
            marks[channel] = max(marks[channel], arg)
            progress = valve.on_watermark(channel, arg)
        elif what == "idle":
            idle[channel] = arg
            progress = valve.on_status(channel, arg)
        else:
            ended.add(channel)
            progress = valve.on_end(channel)
        active = [c for c in range(4) if c not in ended and not idle[c]]
        live = [c for c in range(4) if c not in ended]
        if progress.watermark is not None:
            assert progress.watermark > last  # never backwards
            last = progress.watermark
            # It rises to exactly what the channels allow, no further.
            if active:
                assert last == min(marks[c] for c in active)
            elif live:
                assert last == max(marks[c] for c in live)
            else:
                assert last == MAX_WATERMARK
        # ... and no less.
        if active:
            assert valve.watermark >= min(marks[c] for c in active)
            assert not valve.idle
        elif live:
            assert valve.idle
            assert valve.watermark >= max(marks[c] for c in live)
        else:
            assert valve.watermark == MAX_WATERMARK


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=30), st.integers(0, 2))
def test_an_idle_channel_stops_holding_back_and_a_woken_one_counts_again(
    marks: list[int], silent: int
) -> None:
    valve = WatermarkValve([0, 1, 2])
    for mark in marks:
        for channel in range(3):
            if channel != silent:
                valve.on_watermark(channel, mark)
    # The silent channel holds everything back until it is declared idle.
    assert valve.watermark == NO_WATERMARK
    valve.on_status(silent, True)
    assert valve.watermark == max(marks)
    valve.on_status(silent, False)
    for channel in range(3):
        if channel != silent:
            valve.on_watermark(channel, max(marks) + 500)
    assert valve.watermark == max(marks)  # counted again: it holds the output back
    valve.on_watermark(silent, max(marks) + 100)
    assert valve.watermark == max(marks) + 100


# -- timers ----------------------------------------------------------------------------------


def test_timers_are_deduplicated_per_key_and_time_and_fire_in_order() -> None:
    table: dict[Any, list[int]] = {}
    timers = TimerQueue(table)
    assert timers.register("a", 30)
    assert not timers.register("a", 30)  # once per (key, time)
    assert timers.register("b", 10)
    assert timers.register("a", 20)
    assert table == {"a": [20, 30], "b": [10]}
    timers.delete("a", 20)
    due = timers.pop_due(25)
    fired = [(ts, key) for ts, key in due if timers.claim(key, ts)]
    assert fired == [(10, "b")]  # a@20 was deleted
    assert table == {"a": [30]}
    assert timers.next_time() == 30


def test_timers_are_rebuilt_from_their_table() -> None:
    first = TimerQueue({})
    for key, ts in [("x", 5), ("y", 1), ("x", 9)]:
        first.register(key, ts)
    second = TimerQueue(dict(first.table))
    assert second.rebuild(second.table.items()) == 3
    due = second.pop_due(MAX_WATERMARK)
    assert [(ts, key) for ts, key in due if second.claim(key, ts)] == [
        (1, "y"),
        (5, "x"),
        (9, "x"),
    ]


def test_timers_of_one_time_fire_in_the_order_they_were_set_across_a_limit() -> None:
    timers = TimerQueue({})
    for key in ["c", "a", "b", "d"]:
        timers.register(key, 10)
    timers.register("e", 5)
    assert len(timers) == 5
    assert timers.take_due(10, limit=3) == [(5, ["e"]), (10, ["c", "a"])]
    assert len(timers) == 2 and timers.next_time() == 10  # the rest stay due
    timers.register("f", 10)
    assert timers.pop_due(10) == [(10, "b"), (10, "d"), (10, "f")]
    assert timers.next_time() is None and len(timers) == 0


# -- window assignment -------------------------------------------------------------------------


@given(st.integers(-(10**9), 10**9), st.integers(1, 10**6), st.integers(0, 10**6))
def test_a_timestamp_is_in_exactly_one_tumbling_window(ts: int, size: int, offset: int) -> None:
    start = tumbling_start(ts, size, offset % size)
    assert start <= ts < start + size
    assert (start - offset) % size == 0


@given(st.integers(-(10**9), 10**9), st.integers(1, 1000), st.integers(1, 1000))
def test_sliding_windows_hold_the_timestamp(ts: int, slide: int, factor: int) -> None:
    size = slide * factor
    starts = sliding_starts(ts, size, slide)
    assert len(starts) == factor
    assert all(s <= ts < s + size and s % slide == 0 for s in starts)


def test_sessions_merge_when_they_overlap_or_touch() -> None:
    merged, absorbed = merge_sessions([(0, 10), (20, 30), (50, 60)], 10, 20)
    assert merged == (0, 30)
    assert sorted(absorbed) == [(0, 10), (20, 30)]
    assert merge_sessions([(0, 10)], 11, 21) == ((11, 21), [])
