"""AlignmentGroup: the bound is the slowest counting member's watermark plus the drift;
idle and finished members do not count; watermarks never go back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.time.alignment import AlignmentGroup
from mesh.time.watermarks import NO_WATERMARK


def test_members_that_have_not_reported_hold_the_others_at_the_start() -> None:
    group = AlignmentGroup(["a", "b"], 30_000)
    assert group.bound == NO_WATERMARK + 30_000
    assert not group.update("a", 1_000_000, idle=False, ended=False)
    assert group.bound == NO_WATERMARK + 30_000  # b has read nothing yet
    assert group.update("b", 900_000, idle=False, ended=False)
    assert group.bound == 930_000


def test_idle_and_finished_members_stop_counting() -> None:
    group = AlignmentGroup(["a", "b", "c"], 10)
    for name, watermark in (("a", 100), ("b", 200), ("c", 300)):
        group.update(name, watermark, idle=False, ended=False)
    assert group.bound == 110
    group.update("a", 100, idle=True, ended=False)
    assert group.bound == 210
    group.update("a", 150, idle=False, ended=False)  # active again: counts again
    assert group.bound == 160
    group.update("a", 150, idle=False, ended=True)
    group.update("b", 200, idle=False, ended=True)
    assert group.bound == 310
    group.update("b", 250, idle=False, ended=False)  # finished stays finished
    assert group.bound == 310
    group.update("c", 300, idle=False, ended=True)
    assert group.bound is None  # nobody holds anybody back


def test_an_older_report_does_not_move_a_watermark_back() -> None:
    group = AlignmentGroup(["a"], 5)
    group.update("a", 100, idle=False, ended=False)
    assert not group.update("a", 50, idle=False, ended=False)
    assert group.bound == 105


def test_bad_groups_and_members_are_refused() -> None:
    with pytest.raises(ValueError, match="above zero"):
        AlignmentGroup(["a"], 0)
    with pytest.raises(ValueError, match="needs members"):
        AlignmentGroup([], 10)
    with pytest.raises(KeyError):
        AlignmentGroup(["a"], 10).update("z", 1, idle=False, ended=False)


@given(
    st.lists(
        st.tuples(
            st.sampled_from("abc"),
            st.integers(-(10**6), 10**6),
            st.booleans(),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_the_bound_is_the_slowest_counting_member_plus_the_drift(reports) -> None:  # type: ignore[no-untyped-def]
    group = AlignmentGroup("abc", 7)
    seen = {name: (NO_WATERMARK, False, False) for name in "abc"}
    for name, watermark, idle, ended in reports:
        group.update(name, watermark, idle=idle, ended=ended)
        old, _, was_ended = seen[name]
        seen[name] = (max(old, watermark), idle, was_ended or ended)
        counting = [w for w, i, e in seen.values() if not (i or e)]
        assert group.bound == (min(counting) + 7 if counting else None)
