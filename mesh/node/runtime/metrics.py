"""The counters of one subtask, read by heartbeats and status."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskMetrics"]


@dataclass
class TaskMetrics:
    """Counters of one subtask (read by heartbeats)."""

    records_in: int = 0
    records_out: int = 0
    backpressure_ms: float = 0.0  # completed waits for output room
    backpressured_since: float | None = None  # monotonic ms, while waiting now
    started_ms: int = 0
    finished_ms: int = 0
    dead_letters: int = 0  # records set aside because user code raised on them

    def backpressure_total(self, now_ms: float) -> float:
        """Time spent waiting for output room, including a wait going on now."""
        since = self.backpressured_since
        return self.backpressure_ms + (now_ms - since if since is not None else 0.0)
