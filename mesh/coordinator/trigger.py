"""When to trigger the next checkpoint, and when failures are too many (pure).

Rules (Flink's): a checkpoint is due ``interval`` after the previous one was
triggered, but never sooner than ``min_pause`` after the previous one ended (completed
or aborted), and never while one is in flight (at most one at a time). A checkpoint in
flight longer than ``timeout`` is expired. More than ``tolerable_failures``
consecutive failed checkpoints fail the job; a completed checkpoint resets the count.
Savepoints are asked for by people: they skip the interval and the pause, but still
wait for a checkpoint in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckpointPolicy", "CheckpointTimer"]


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """A job's checkpoint settings."""

    interval_ms: int | None  # None: no periodic checkpoints (savepoints still work)
    timeout_ms: int = 600_000
    min_pause_ms: int = 0
    tolerable_failures: int = 3
    retained: int = 3  # completed checkpoints kept on disk


class CheckpointTimer:
    """Decides whether a checkpoint is due; counts consecutive failures."""

    def __init__(self, policy: CheckpointPolicy, now_ms: float) -> None:
        self.policy = policy
        # Monotonic ms of the last trigger (the job's start counts as one).
        self._last_trigger = now_ms
        # Monotonic ms when the last checkpoint completed or was aborted.
        self._last_end = now_ms
        self.in_flight = False
        self.consecutive_failures = 0

    def due(self, now_ms: float) -> bool:
        """Whether a periodic checkpoint should be triggered now."""
        interval = self.policy.interval_ms
        if interval is None or self.in_flight:
            return False
        return (
            now_ms - self._last_trigger >= interval
            and now_ms - self._last_end >= self.policy.min_pause_ms
        )

    def pause_over(self, now_ms: float) -> bool:
        """Whether ``min_pause`` has passed since the last checkpoint ended."""
        return now_ms - self._last_end >= self.policy.min_pause_ms

    def triggered(self, now_ms: float) -> None:
        """A checkpoint (or savepoint) was triggered."""
        self._last_trigger = now_ms
        self.in_flight = True

    def expired(self, started_ms: float, now_ms: float) -> bool:
        """Whether a checkpoint started at ``started_ms`` has run out of time."""
        return now_ms - started_ms >= self.policy.timeout_ms

    def completed(self, now_ms: float) -> None:
        """The checkpoint in flight completed."""
        self.in_flight = False
        self._last_end = now_ms
        self.consecutive_failures = 0

    def failed(self, now_ms: float) -> bool:
        """The checkpoint in flight failed; True when that is one failure too many."""
        self.in_flight = False
        self._last_end = now_ms
        self.consecutive_failures += 1
        return self.consecutive_failures > self.policy.tolerable_failures
