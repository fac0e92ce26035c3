"""Barrier alignment of one input gate (mesh/node/alignment.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import ChannelError
from mesh.node.runtime.alignment import (
    AbortCheckpoint,
    Action,
    BarrierAligner,
    BlockChannel,
    TakeSnapshot,
    UnblockAll,
)

# -- exactly_once ---------------------------------------------------------------------------


def test_exactly_once_blocks_each_channel_then_snapshots_and_unblocks() -> None:
    aligner = BarrierAligner([0, 1, 2], exactly_once=True)
    assert aligner.on_barrier(1, 5) == [BlockChannel(1)]
    assert aligner.current == 5
    assert aligner.on_barrier(0, 5) == [BlockChannel(0)]
    assert aligner.on_barrier(2, 5) == [BlockChannel(2), TakeSnapshot(5), UnblockAll()]
    assert aligner.current is None
    assert aligner.last_done == 5


def test_single_channel_snapshots_on_its_barrier() -> None:
    aligner = BarrierAligner([7], exactly_once=True)
    assert aligner.on_barrier(7, 1) == [BlockChannel(7), TakeSnapshot(1), UnblockAll()]


def test_consecutive_checkpoints_align_independently() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    aligner.on_barrier(0, 1)
    assert aligner.on_barrier(1, 1) == [BlockChannel(1), TakeSnapshot(1), UnblockAll()]
    assert aligner.on_barrier(1, 2) == [BlockChannel(1)]
    assert aligner.on_barrier(0, 2) == [BlockChannel(0), TakeSnapshot(2), UnblockAll()]


def test_no_channels_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one input channel"):
        BarrierAligner([], exactly_once=True)


def test_barrier_from_unknown_channel_raises() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    with pytest.raises(ChannelError, match="channel 9"):
        aligner.on_barrier(9, 1)
    with pytest.raises(ChannelError, match="channel 9"):
        aligner.on_end_of_partition(9)


# -- END_OF_PARTITION -----------------------------------------------------------------------


def test_ended_channel_counts_as_delivered_before_the_alignment() -> None:
    aligner = BarrierAligner([0, 1, 2], exactly_once=True)
    assert aligner.on_end_of_partition(2) == []
    assert aligner.on_barrier(0, 1) == [BlockChannel(0)]
    assert aligner.on_barrier(1, 1) == [BlockChannel(1), TakeSnapshot(1), UnblockAll()]
    # And for every later checkpoint too.
    aligner.on_barrier(1, 2)
    assert aligner.on_barrier(0, 2) == [BlockChannel(0), TakeSnapshot(2), UnblockAll()]


def test_end_of_partition_during_alignment_completes_it() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    assert aligner.on_barrier(0, 3) == [BlockChannel(0)]
    assert aligner.on_end_of_partition(1) == [TakeSnapshot(3), UnblockAll()]
    assert aligner.current is None


def test_end_of_partition_during_alignment_with_others_missing_waits() -> None:
    aligner = BarrierAligner([0, 1, 2], exactly_once=True)
    aligner.on_barrier(0, 3)
    assert aligner.on_end_of_partition(1) == []
    assert aligner.current == 3
    assert aligner.on_barrier(2, 3) == [BlockChannel(2), TakeSnapshot(3), UnblockAll()]


def test_end_of_partition_of_a_channel_that_delivered_the_barrier_does_not_complete() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    aligner.on_barrier(0, 3)
    assert aligner.on_end_of_partition(0) == []
    assert aligner.on_barrier(1, 3) == [BlockChannel(1), TakeSnapshot(3), UnblockAll()]


def test_end_of_partition_without_alignment_does_nothing() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    assert aligner.on_end_of_partition(0) == []
    assert aligner.on_end_of_partition(1) == []
    assert aligner.current is None


def test_barrier_after_end_of_partition_raises() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    aligner.on_end_of_partition(0)
    with pytest.raises(ChannelError, match=r"channel 0.*END_OF_PARTITION"):
        aligner.on_barrier(0, 1)


# -- newer, stale and duplicate barriers ----------------------------------------------------


def test_newer_barrier_aborts_older_alignment_and_starts_the_newer() -> None:
    aligner = BarrierAligner([0, 1, 2], exactly_once=True)
    aligner.on_barrier(0, 1)
    aligner.on_barrier(1, 1)
    assert aligner.on_barrier(2, 2) == [AbortCheckpoint(1), UnblockAll(), BlockChannel(2)]
    assert aligner.current == 2
    assert aligner.last_done == 1
    # Channels that had delivered barrier 1 were unblocked and deliver 2 now.
    assert aligner.on_barrier(0, 2) == [BlockChannel(0)]
    assert aligner.on_barrier(1, 2) == [BlockChannel(1), TakeSnapshot(2), UnblockAll()]


def test_newer_barrier_completing_at_once_after_abort() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    aligner.on_barrier(0, 1)
    aligner.on_end_of_partition(0)  # channel 0 delivered 1, then ended
    assert aligner.on_barrier(1, 2) == [
        AbortCheckpoint(1),
        UnblockAll(),
        BlockChannel(1),
        TakeSnapshot(2),
        UnblockAll(),
    ]


def test_stale_barriers_are_ignored() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    aligner.on_barrier(0, 1)
    aligner.on_barrier(1, 2)  # aborts 1
    assert aligner.on_barrier(1, 1) == []  # 1 is done (aborted): stale
    aligner.on_barrier(0, 2)  # snapshot 2
    assert aligner.last_done == 2
    assert aligner.on_barrier(0, 2) == []
    assert aligner.on_barrier(1, 1) == []
    assert aligner.current is None


def test_older_barrier_during_a_newer_alignment_is_ignored() -> None:
    aligner = BarrierAligner([0, 1, 2], exactly_once=True)
    aligner.on_barrier(0, 4)
    assert aligner.on_barrier(1, 3) == []
    assert aligner.current == 4
    assert aligner.on_barrier(1, 4) == [BlockChannel(1)]
    assert aligner.on_barrier(2, 4) == [BlockChannel(2), TakeSnapshot(4), UnblockAll()]


def test_same_barrier_twice_on_one_channel_raises() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    aligner.on_barrier(0, 1)
    with pytest.raises(ChannelError, match=r"channel 0: barrier 1 arrived twice"):
        aligner.on_barrier(0, 1)


def test_abort_gives_up_the_current_alignment() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=True)
    assert aligner.abort() == []
    aligner.on_barrier(0, 3)
    assert aligner.abort() == [AbortCheckpoint(3), UnblockAll()]
    assert aligner.current is None
    assert aligner.on_barrier(1, 3) == []  # stale now
    assert aligner.on_barrier(1, 4) == [BlockChannel(1)]


# -- at_least_once --------------------------------------------------------------------------


def test_at_least_once_never_blocks() -> None:
    aligner = BarrierAligner([0, 1, 2], exactly_once=False)
    assert aligner.on_barrier(0, 1) == []
    assert aligner.on_barrier(1, 1) == []
    assert aligner.on_barrier(2, 1) == [TakeSnapshot(1)]
    assert aligner.on_barrier(0, 2) == []
    assert aligner.on_barrier(0, 3) == [AbortCheckpoint(2)]
    assert aligner.on_end_of_partition(1) == []
    assert aligner.on_barrier(2, 3) == [TakeSnapshot(3)]
    assert aligner.abort() == []
    aligner.on_barrier(0, 4)
    assert aligner.abort() == [AbortCheckpoint(4)]


def test_at_least_once_duplicate_and_after_end_still_raise() -> None:
    aligner = BarrierAligner([0, 1], exactly_once=False)
    aligner.on_barrier(0, 1)
    with pytest.raises(ChannelError):
        aligner.on_barrier(0, 1)
    aligner.on_end_of_partition(1)
    with pytest.raises(ChannelError):
        aligner.on_barrier(1, 2)


# -- property: random interleavings ---------------------------------------------------------

END = "end"


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[int, list[list[int | str]], list[int], bool]:
    """(k, per-channel event lists, channel choice sequence, exactly_once).

    Each channel delivers barriers of an increasing subset of 1..k; it either ends
    (END_OF_PARTITION, possibly early) or delivers barrier k, so no alignment can wait
    forever for a barrier that never comes.
    """
    k = draw(st.integers(min_value=1, max_value=5))
    c = draw(st.integers(min_value=1, max_value=4))
    channels: list[list[int | str]] = []
    for _ in range(c):
        subset = sorted(draw(st.sets(st.integers(min_value=1, max_value=k))))
        ends = draw(st.booleans())
        if not ends and k not in subset:
            subset.append(k)
        events: list[int | str] = list(subset)
        if ends:
            events.append(END)
        channels.append(events)
    choices = draw(st.lists(st.integers(min_value=0, max_value=c - 1), max_size=60))
    return k, channels, choices, draw(st.booleans())


@given(_scenarios())
def test_random_interleavings_keep_the_alignment_invariants(
    scenario: tuple[int, list[list[int | str]], list[int], bool],
) -> None:
    k, events, choices, exactly_once = scenario
    channels = list(range(len(events)))
    aligner = BarrierAligner(channels, exactly_once=exactly_once)
    position = [0] * len(events)
    delivered: dict[int, set[int]] = {n: set() for n in range(1, k + 1)}
    ended: set[int] = set()
    highest = 0  # the newest barrier any channel delivered so far
    blocked: set[int] = set()
    snapshots: list[int] = []
    choice_iter = iter(choices)

    def ready(n: int, newest: int) -> bool:
        """Barrier n reached every channel (ended ones count) and was never overtaken."""
        return bool(delivered[n]) and set(channels) <= delivered[n] | ended and newest <= n

    while True:
        available = [c for c in channels if position[c] < len(events[c]) and c not in blocked]
        if not available:
            break
        # Follow the drawn choices while they last, then drain in channel order.
        pick = next(choice_iter, None)
        channel = available[pick % len(available)] if pick is not None else available[0]
        event = events[channel][position[channel]]
        position[channel] += 1

        before = {n: ready(n, highest) for n in delivered}
        if event == END:
            actions: list[Action] = aligner.on_end_of_partition(channel)
            ended.add(channel)
        else:
            assert isinstance(event, int)
            actions = aligner.on_barrier(channel, event)
            delivered[event].add(channel)
            highest = max(highest, event)
        expected = sorted(n for n in delivered if ready(n, highest) and not before[n])

        taken = [a.checkpoint for a in actions if isinstance(a, TakeSnapshot)]
        assert taken == expected, (events, actions)
        for action in actions:
            if isinstance(action, BlockChannel):
                assert exactly_once
                blocked.add(action.channel)
            elif isinstance(action, UnblockAll):
                assert exactly_once
                blocked.clear()
            elif isinstance(action, TakeSnapshot):
                assert not snapshots or action.checkpoint > snapshots[-1]
                snapshots.append(action.checkpoint)
        if exactly_once and aligner.current is not None:
            # Blocked are exactly the channels that delivered the barrier being aligned.
            assert blocked == delivered[aligner.current]
        if not exactly_once:
            assert blocked == set()

    # Every channel delivered all it had, and nothing stays blocked.
    assert all(position[c] == len(events[c]) for c in channels)
    assert blocked == set()
    assert aligner.current is None
    # Barrier k, once anyone delivered it, cannot be overtaken: it was snapshotted last.
    if delivered[k]:
        assert snapshots[-1] == k
