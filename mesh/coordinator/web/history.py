"""A few minutes of each job's throughput, one point a second, for the dashboard's
charts (kept only while the HTTP server runs; nothing is stored on disk)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from mesh.coordinator.jobs import JobRecord
from mesh.coordinator.views import end_tasks

__all__ = ["HISTORY_INTERVAL_MS", "JobHistory", "RatePoint"]

#: How often a point is taken.
HISTORY_INTERVAL_MS = 1000
# Points kept per job: five minutes.
_POINTS = 300


@dataclass(frozen=True, slots=True)
class RatePoint:
    """A job's figures at one moment: records/s into its sources and out of its last
    tasks, and the highest backpressure ratio of any subtask."""

    time_ms: int
    in_rate: float
    out_rate: float
    backpressure_ratio: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "time_ms": self.time_ms,
            "in_rate": self.in_rate,
            "out_rate": self.out_rate,
            "backpressure_ratio": self.backpressure_ratio,
        }


class JobHistory:
    """The recent points of every job that is not over (a job's points stay until it is
    forgotten)."""

    def __init__(self) -> None:
        self._points: dict[str, deque[RatePoint]] = {}

    def sample(self, jobs: list[JobRecord], now_ms: int) -> None:
        """Take a point of each job that is running; forget jobs no longer listed."""
        listed = {job.job_id for job in jobs}
        for gone in self._points.keys() - listed:
            del self._points[gone]
        for job in jobs:
            if job.done:
                continue
            self._points.setdefault(job.job_id, deque(maxlen=_POINTS)).append(_point(job, now_ms))

    def points(self, job_id: str) -> list[RatePoint]:
        """The job's points, oldest first."""
        return list(self._points.get(job_id, ()))


def _point(job: JobRecord, now_ms: int) -> RatePoint:
    sources, sinks = end_tasks(job.graph)
    in_rate = out_rate = ratio = 0.0
    for key, rate in job.rates.items():
        task = int(key.partition(".")[0])
        if task in sources:
            in_rate += rate.in_rate
        if task in sinks:
            out_rate += rate.out_rate
        ratio = max(ratio, rate.backpressure_ratio)
    return RatePoint(now_ms, round(in_rate, 1), round(out_rate, 1), round(ratio, 3))
