"""Failover and resumption: the part of the coordinator that restarts jobs.

``JobFailover`` is mixed into ``Coordinator``: a failure the restart strategy allows
moves a job to RESTARTING (``_restart``); the coordinator's ticker then deploys the next
attempt once the delay is over, the failed attempt stopped and enough slots are free
(``_restart_when_ready``, ``_redeploy``), from the newest usable checkpoint. Every
lifecycle change is written to the coordinator's database (``_persist``), and a
coordinator that starts reads its jobs back (``_resume_jobs``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.abc

from mesh.coordinator.jobs import JobRecord, JobState, JobTable
from mesh.coordinator.jobstore import JobStore
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.restore import first_usable_restore
from mesh.coordinator.store import CheckpointStore
from mesh.errors import CheckpointError, MeshError, SchedulingError, StateError
from mesh.protocol.messages import TaskAssignment
from mesh.time.clock import Clock

__all__ = ["JobFailover"]

log = logging.getLogger("mesh.coordinator")


class JobFailover:
    """Restarting failed jobs and resuming a previous run's jobs (a Coordinator mixin)."""

    # Provided by the Coordinator.
    config: Any
    clock: Clock
    nodes: NodeRegistry
    jobs: JobTable
    store: CheckpointStore | None
    job_store: JobStore | None
    _tg: anyio.abc.TaskGroup | None

    def _schedule(self, job: JobRecord) -> list[TaskAssignment]:
        raise NotImplementedError

    def _deploy(self, job: JobRecord) -> None:
        raise NotImplementedError

    def _cancel_tasks(self, job: JobRecord, reason: str) -> None:
        raise NotImplementedError

    def _end(self, job: JobRecord, state: JobState) -> None:
        raise NotImplementedError

    def _fail_for_good(self, job: JobRecord, error: str) -> None:
        raise NotImplementedError

    def _restart(self, job: JobRecord, error: str, delay_ms: int) -> None:
        """Begin a failover: stop the failed attempt, restart after ``delay_ms``."""
        log.warning(
            "job %s (%s) attempt %d failed; restarting in %d ms (restart %d, %s): %s",
            job.job_id,
            job.name,
            job.attempt,
            delay_ms,
            job.restarts.restarts,
            job.restarts.describe(),
            error,
        )
        if job.checkpoints is not None:
            job.checkpoints.shutdown("restarting")
        job.transition(JobState.RESTARTING)
        now = self.clock.monotonic_ms()
        job.restart_at_ms = now + delay_ms
        job.cancel_deadline_ms = now + self.config.cancel_timeout_ms
        job.slot_deadline_ms = None
        self._cancel_tasks(job, "failover")
        self._persist(job, state=job.state.value, restarts=job.restarts.restarts)

    def _restart_when_ready(self, job: JobRecord) -> None:
        """Deploy the next attempt once the delay is over, the failed attempt stopped (or
        its cancel timed out) and enough slots are free."""
        now = self.clock.monotonic_ms()
        if job.redeploying or now < job.restart_at_ms:
            return
        if not job.subtasks_done() and now < job.cancel_deadline_ms:
            return
        self.nodes.release(job.job_id)
        assignments = self._slots_for(job, "restart")
        if assignments is None:
            return
        assert self._tg is not None
        job.redeploying = True
        # The slots are the next attempt's from now on: no job placed meanwhile takes them.
        self.nodes.allocate(job.job_id, job.attempt + 1, assignments)
        self._tg.start_soon(self._redeploy, job, assignments)

    def _slots_for(self, job: JobRecord, what: str) -> list[TaskAssignment] | None:
        """A placement for ``job`` ("schedule" or "restart" it), or None while it waits for
        slots: it waits up to ``slot_timeout`` (``job.waiting`` says why), then fails with
        the scheduler's explanation."""
        now = self.clock.monotonic_ms()
        try:
            assignments = self._schedule(job)
        except SchedulingError as exc:
            if job.slot_deadline_ms is None:
                job.slot_deadline_ms = now + self.config.slot_timeout_ms
                log.warning(
                    "job %s (%s) waits for slots to %s: %s", job.job_id, job.name, what, exc
                )
            elif now > job.slot_deadline_ms:
                self._fail_for_good(
                    job,
                    f"cannot {what} job {job.name!r}: no slots within "
                    f"{self.config.slot_timeout_ms} ms: {exc}",
                )
                return None
            job.waiting = str(exc)
            return None
        if job.waiting is not None:
            log.info("job %s (%s) got its slots", job.job_id, job.name)
        job.waiting, job.slot_deadline_ms = None, None
        return assignments

    async def _redeploy(self, job: JobRecord, assignments: list[TaskAssignment]) -> None:
        """Read the restore point (off the loop: it hashes every file), then deploy the
        next attempt into ``assignments`` (allocated already)."""
        assert self.store is not None
        # Completed checkpoints and savepoints of the job, newest first, then what the
        # job was submitted with.
        candidates = [
            r.path for r in reversed(self.store.history(job.job_id)) if r.state == "COMPLETED"
        ]
        if job.restore_path:
            candidates.append(job.restore_path)
        try:
            restore = await anyio.to_thread.run_sync(
                first_usable_restore, candidates, job.graph.logical
            )
        except CheckpointError as exc:
            job.redeploying = False
            self._fail_for_good(job, f"cannot restart: no usable checkpoint ({exc})")
            return
        job.redeploying = False
        if job.state is not JobState.RESTARTING:
            return  # cancelled meanwhile (its slots were released then)
        if any((node := self.nodes.get(a.node_id)) is None or node.leaving for a in assignments):
            self.nodes.release(job.job_id)
            return  # a node went away meanwhile: place the job again
        job.new_attempt()
        job.restore = restore
        job.assignments = assignments
        job.transition(JobState.SCHEDULING)
        self._persist(job, state=job.state.value, attempt=job.attempt)
        log.info(
            "job %s (%s) attempt %d deploying %s",
            job.job_id,
            job.name,
            job.attempt,
            f"from {restore.path}" if restore else "from the start",
        )
        self._deploy(job)

    def _store_new(self, job: JobRecord) -> None:
        assert self.job_store is not None
        self.job_store.add(job.stored())

    def _persist(self, job: JobRecord, **values: Any) -> None:
        if self.job_store is None or job.job_id not in self.jobs:
            return
        try:
            self.job_store.update(job.job_id, **values)
        except StateError as exc:
            log.error("job %s: %s", job.job_id, exc)

    def _resume_jobs(self) -> None:
        """Read the jobs of a previous run: ended ones for list/status; the others resume
        as a new attempt from their latest checkpoint once enough nodes registered."""
        assert self.job_store is not None
        stored, problems = self.job_store.load()
        for problem in problems:
            log.error("cannot resume %s", problem)
        now = self.clock.monotonic_ms()
        for row in stored:
            try:
                job = JobRecord.from_stored(row)
            except MeshError as exc:
                log.error("cannot resume job %s: %s", row.job_id, exc)
                continue
            self.jobs[job.job_id] = job
            if job.done:
                continue
            if job.state in (JobState.CREATED, JobState.CANCELLING):
                job.state = JobState.CANCELLING
                self._end(job, JobState.CANCELED)
                continue
            job.state = JobState.RESTARTING  # not a failure: the strategy is not asked
            job.restart_at_ms = job.cancel_deadline_ms = now
            self._persist(job, state=job.state.value)
            log.info(
                "job %s (%s) resumes after the coordinator restarted (attempt %d was running)",
                job.job_id,
                job.name,
                job.attempt,
            )
