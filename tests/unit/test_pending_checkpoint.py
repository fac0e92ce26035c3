"""Pending checkpoints and the checkpoint timer (mesh/coordinator/pending.py, trigger.py)."""

from __future__ import annotations

import pytest

from mesh.coordinator.pending import AckResult, PendingCheckpoint
from mesh.coordinator.trigger import CheckpointPolicy, CheckpointTimer


def _pending(*subtasks: str) -> PendingCheckpoint:
    return PendingCheckpoint(
        checkpoint_id=7,
        kind="checkpoint",
        directory="/tmp/chk-7",
        expected=frozenset(subtasks),
        started_ms=100.0,
    )


# -- PendingCheckpoint ----------------------------------------------------------------------


def test_acks_are_counted_until_fully_acknowledged() -> None:
    pending = _pending("a.0", "a.1", "b.0")
    assert not pending.fully_acknowledged
    assert pending.missing == ["a.0", "a.1", "b.0"]
    assert pending.acknowledge("b.0", {"files": 1}) is AckResult.SUCCESS
    assert pending.missing == ["a.0", "a.1"]
    assert pending.acknowledge("a.1", None) is AckResult.SUCCESS
    assert not pending.fully_acknowledged
    assert pending.acknowledge("a.0", "x") is AckResult.SUCCESS
    assert pending.fully_acknowledged
    assert pending.missing == []
    assert pending.acks == {"b.0": {"files": 1}, "a.1": None, "a.0": "x"}


def test_duplicate_ack_is_reported_and_keeps_the_first_payload() -> None:
    pending = _pending("a.0", "a.1")
    pending.acknowledge("a.0", "first")
    assert pending.acknowledge("a.0", "second") is AckResult.DUPLICATE
    assert pending.acks == {"a.0": "first"}
    assert pending.missing == ["a.1"]
    assert not pending.fully_acknowledged


def test_unknown_subtask_is_reported_and_not_counted() -> None:
    pending = _pending("a.0")
    assert pending.acknowledge("z.9", "p") is AckResult.UNKNOWN
    assert pending.acks == {}
    assert not pending.fully_acknowledged
    assert pending.missing == ["a.0"]


def test_acks_after_discard_are_discarded() -> None:
    pending = _pending("a.0", "a.1")
    pending.acknowledge("a.0", "p")
    assert pending.discard("declined by a.1") is True
    assert pending.discarded == "declined by a.1"
    assert pending.acknowledge("a.1", "p") is AckResult.DISCARDED
    assert pending.acknowledge("z.9", "p") is AckResult.DISCARDED
    assert pending.acks == {"a.0": "p"}
    assert not pending.fully_acknowledged


def test_discarded_checkpoint_is_never_fully_acknowledged() -> None:
    pending = _pending("a.0")
    pending.acknowledge("a.0", "p")
    assert pending.fully_acknowledged
    assert pending.discard("expired") is True
    assert not pending.fully_acknowledged
    with pytest.raises(RuntimeError, match="checkpoint 7"):
        pending.complete()
    assert pending.completed is False


def test_discard_twice_keeps_the_first_reason() -> None:
    pending = _pending("a.0")
    assert pending.discard("first") is True
    assert pending.discard("second") is False
    assert pending.discarded == "first"


def test_complete_refuses_when_acks_are_missing() -> None:
    pending = _pending("a.0", "b.1", "c.2")
    pending.acknowledge("b.1", None)
    with pytest.raises(RuntimeError, match=r"waiting for \['a\.0', 'c\.2'\]"):
        pending.complete()
    assert pending.completed is False


def test_complete_then_no_more_acks_and_no_discard() -> None:
    pending = _pending("a.0")
    pending.acknowledge("a.0", None)
    pending.complete()
    assert pending.completed is True
    assert pending.acknowledge("a.0", None) is AckResult.DISCARDED
    assert pending.discard("too late") is False
    assert pending.discarded is None


# -- CheckpointTimer ------------------------------------------------------------------------


def test_due_after_interval_since_the_start() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=1000), now_ms=500)
    assert not timer.due(500)
    assert not timer.due(1499)
    assert timer.due(1500)
    assert timer.due(9000)


def test_due_after_interval_since_the_previous_trigger() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=1000), now_ms=0)
    timer.triggered(1000)
    timer.completed(1200)
    assert not timer.due(1999)
    assert timer.due(2000)


def test_never_due_while_one_is_in_flight() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=100), now_ms=0)
    timer.triggered(100)
    assert timer.in_flight
    assert not timer.due(200)
    assert not timer.due(100_000)
    timer.failed(100_000)
    assert not timer.in_flight
    assert timer.due(100_000)


def test_min_pause_counts_from_the_end_of_the_previous_checkpoint() -> None:
    policy = CheckpointPolicy(interval_ms=1000, min_pause_ms=800)
    timer = CheckpointTimer(policy, now_ms=0)
    timer.triggered(1000)
    timer.completed(1900)  # took 900 ms
    assert not timer.due(2000)  # interval passed, but only 100 ms of pause
    assert not timer.due(2699)
    assert timer.due(2700)


def test_min_pause_after_a_failure_too() -> None:
    policy = CheckpointPolicy(interval_ms=100, min_pause_ms=500)
    timer = CheckpointTimer(policy, now_ms=0)
    timer.triggered(100)
    timer.failed(300)
    assert not timer.due(799)
    assert timer.due(800)


def test_min_pause_applies_from_the_start() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=100, min_pause_ms=1000), now_ms=0)
    assert not timer.due(500)
    assert timer.due(1000)


def test_no_periodic_checkpoints_without_interval() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=None), now_ms=0)
    assert not timer.due(0)
    assert not timer.due(10**12)
    # A savepoint still goes through the timer's bookkeeping.
    timer.triggered(50)
    assert timer.in_flight
    timer.completed(60)
    assert not timer.due(10**12)


def test_expiry_after_timeout() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=100, timeout_ms=5000), now_ms=0)
    assert not timer.expired(started_ms=1000, now_ms=5999)
    assert timer.expired(started_ms=1000, now_ms=6000)
    assert timer.expired(started_ms=1000, now_ms=7000)


def test_failures_beyond_tolerable_count_consecutively() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=10, tolerable_failures=2), now_ms=0)
    timer.triggered(10)
    assert timer.failed(20) is False
    timer.triggered(30)
    assert timer.failed(40) is False
    assert timer.consecutive_failures == 2
    timer.triggered(50)
    assert timer.failed(60) is True
    assert timer.consecutive_failures == 3


def test_completion_resets_the_failure_count() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=10, tolerable_failures=1), now_ms=0)
    timer.triggered(10)
    assert timer.failed(20) is False
    timer.triggered(30)
    timer.completed(40)
    assert timer.consecutive_failures == 0
    timer.triggered(50)
    assert timer.failed(60) is False
    timer.triggered(70)
    assert timer.failed(80) is True


def test_zero_tolerable_failures_fail_at_the_first() -> None:
    timer = CheckpointTimer(CheckpointPolicy(interval_ms=10, tolerable_failures=0), now_ms=0)
    timer.triggered(10)
    assert timer.failed(20) is True
