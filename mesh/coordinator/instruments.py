"""The coordinator's metrics, per job: restarts, checkpoints completed, the latest
checkpoint's duration, size and alignment time, and how old it is (read when scraped; see
``mesh.telemetry.instruments``). Labels: ``job_id`` and ``job_name``."""

from __future__ import annotations

from collections.abc import Callable

from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.store import CheckpointRecord
from mesh.telemetry.instruments import Instrument, Reading
from mesh.time.clock import Clock

__all__ = ["coordinator_instruments"]


def coordinator_instruments(jobs: JobTable, clock: Clock) -> list[Instrument]:
    """The instruments of a coordinator whose jobs are ``jobs`` (read, never changed)."""

    def reading(value: Callable[[JobRecord], float | None]) -> Callable[[], list[Reading]]:
        def read() -> list[Reading]:
            found = []
            for job in list(jobs.values()):
                if job.done:
                    continue
                v = value(job)
                if v is not None:
                    found.append(Reading(v, {"job_id": job.job_id, "job_name": job.name}))
            return found

        return read

    def latest(job: JobRecord) -> CheckpointRecord | None:
        manager = job.checkpoints
        return manager.completed[-1] if manager is not None and manager.completed else None

    def age(job: JobRecord) -> float | None:
        record = latest(job)
        return (clock.now_ms() - record.ended_ms) / 1000 if record is not None else None

    return [
        Instrument(
            "mesh.job.restarts",
            "times the job failed over",
            "{restart}",
            reading(lambda job: job.restarts.restarts),
        ),
        Instrument(
            "mesh.job.checkpoints.completed",
            "checkpoints of the current attempt that completed",
            "{checkpoint}",
            reading(lambda job: len(job.checkpoints.completed) if job.checkpoints else 0),
        ),
        Instrument(
            "mesh.job.checkpoint.duration",
            "how long the latest completed checkpoint took",
            "s",
            reading(lambda job: (r.duration_ms / 1000) if (r := latest(job)) else None),
            monotonic=False,
        ),
        Instrument(
            "mesh.job.checkpoint.size",
            "bytes of state in the latest completed checkpoint",
            "By",
            reading(lambda job: r.size_bytes if (r := latest(job)) else None),
            monotonic=False,
        ),
        Instrument(
            "mesh.job.checkpoint.alignment.duration",
            "longest barrier alignment of a subtask in the latest completed checkpoint",
            "s",
            reading(
                lambda job: (
                    job.checkpoints.latest_alignment_ms / 1000
                    if job.checkpoints is not None
                    and job.checkpoints.latest_alignment_ms is not None
                    else None
                )
            ),
            monotonic=False,
        ),
        Instrument(
            "mesh.job.checkpoint.age",
            "time since the latest checkpoint completed",
            "s",
            reading(age),
            monotonic=False,
        ),
    ]
