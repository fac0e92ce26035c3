"""The jobs' lifecycle as written to the coordinator's database.

Every change of state, attempt or checkpoint id goes through ``JobJournal``; a write
that fails is logged and the coordinator goes on (the job keeps running; only a
restart of the coordinator would miss the change), except the first write of a new
job, which refuses the job.
"""

from __future__ import annotations

import logging
from typing import Any

from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.jobstore import JobStore, StoredJob
from mesh.errors import StateError

__all__ = ["JobJournal"]

log = logging.getLogger("mesh.coordinator")


class JobJournal:
    """Writes the coordinator's jobs to its database (``jobstore.JobStore``)."""

    def __init__(self, store: JobStore, jobs: JobTable) -> None:
        self.store = store
        self._jobs = jobs

    def add(self, job: JobRecord) -> None:
        """Record a new job; raises StateError if it cannot be written."""
        self.store.add(job.stored())

    def update(self, job: JobRecord, **values: Any) -> None:
        """Record changed columns of a known job."""
        if job.job_id not in self._jobs:
            return
        try:
            self.store.update(job.job_id, **values)
        except StateError as exc:
            log.error("job %s: %s", job.job_id, exc)

    def ended(self, job: JobRecord, *, retained: int) -> None:
        """Drop an ended job's code bundle and forget the oldest ended jobs beyond
        ``retained``."""
        try:
            self.store.drop_bundle(job.job_id)
            for job_id in self._jobs.forget_ended(keep=retained):
                self.store.forget(job_id)
        except StateError as exc:
            log.error("job %s: %s", job.job_id, exc)

    def load(self) -> tuple[list[StoredJob], list[str]]:
        """Every stored job, and a description of each row that could not be read."""
        return self.store.load()
