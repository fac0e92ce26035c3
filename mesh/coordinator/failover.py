"""Failover and resumption: restarting a job's failed attempt, and picking up the jobs
of a coordinator that restarted.

A failure the restart strategy allows moves a job to RESTARTING (``restart``); the
coordinator's ticker then calls ``restart_when_ready``, which deploys the next attempt
once the delay is over, the failed attempt stopped and enough slots are free, from the
newest usable checkpoint (``_redeploy``). A coordinator that starts reads its jobs back
(``resume``): unfinished ones restart as a new attempt, without asking the strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from mesh.coordinator.background import BackgroundTasks
from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.deploy import Deployer, GaveUpWaiting
from mesh.coordinator.flows import JobFlows
from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.journal import JobJournal
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.restore import first_usable_restore
from mesh.coordinator.store import CheckpointStore
from mesh.errors import CheckpointError, MeshError
from mesh.protocol.messages import TaskAssignment
from mesh.protocol.states import CheckpointOutcome, JobState
from mesh.time.clock import Clock

__all__ = ["JobFailover"]

log = logging.getLogger("mesh.coordinator")


class JobFailover:
    """Restarts failed job attempts and resumes a previous run's jobs.

    It decides nothing about failing: ``fail_for_good`` (a job that cannot restart) and
    ``end`` (a resumed job that must just end) are the lifecycle's.
    """

    def __init__(
        self,
        *,
        config: CoordinatorConfig,
        clock: Clock,
        nodes: NodeRegistry,
        jobs: JobTable,
        deployer: Deployer,
        journal: JobJournal,
        store: CheckpointStore,
        background: BackgroundTasks,
        flows: JobFlows,
        fail_for_good: Callable[[JobRecord, str], None],
        end: Callable[[JobRecord, JobState], None],
    ) -> None:
        self._config = config
        self._clock = clock
        self._nodes = nodes
        self._jobs = jobs
        self._deployer = deployer
        self._journal = journal
        self._store = store
        self._background = background
        self._flows = flows
        self._fail_for_good = fail_for_good
        self._end = end

    def restart(self, job: JobRecord, error: str, delay_ms: int) -> None:
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
        now = self._clock.monotonic_ms()
        job.restart_at_ms = now + delay_ms
        job.cancel_deadline_ms = now + self._config.cancel_timeout_ms
        job.slot_deadline_ms = None
        self._deployer.cancel(job, "failover")
        self._journal.update(job, state=job.state.value, restarts=job.restarts.restarts)

    def restart_when_ready(self, job: JobRecord) -> None:
        """Deploy the next attempt once the delay is over, the failed attempt stopped (or
        its cancel timed out) and enough slots are free."""
        now = self._clock.monotonic_ms()
        if job.redeploying or now < job.restart_at_ms:
            return
        if not job.subtasks_done() and now < job.cancel_deadline_ms:
            return
        self._nodes.release(job.job_id)
        try:
            assignments = self._deployer.slots_for(job, "restart")
        except GaveUpWaiting as exc:
            self._fail_for_good(job, str(exc))
            return
        if assignments is None:
            return
        job.redeploying = True
        self._flows.step(
            job, "restore", {"mesh.failover.nodes": len({a.node_id for a in assignments})}
        )
        # The slots are the next attempt's from now on: no job placed meanwhile takes them.
        self._nodes.allocate(job.job_id, job.attempt + 1, assignments)
        self._background.start_soon(self._redeploy, job, assignments)

    async def _redeploy(self, job: JobRecord, assignments: list[TaskAssignment]) -> None:
        """Read the restore point (off the loop: it hashes every file), then deploy the
        next attempt into ``assignments`` (allocated already)."""
        # Completed checkpoints and savepoints of the job, newest first, then what the
        # job was submitted with.
        candidates = [
            r.path
            for r in reversed(self._store.history(job.job_id))
            if r.state == CheckpointOutcome.COMPLETED
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
        if any((node := self._nodes.get(a.node_id)) is None or node.leaving for a in assignments):
            self._nodes.release(job.job_id)
            return  # a node went away meanwhile: place the job again
        job.new_attempt()
        job.restore = restore
        job.assignments = assignments
        job.transition(JobState.SCHEDULING)
        self._flows.note(job, {"mesh.restore.path": restore.path if restore else ""})
        self._flows.step(job, "deploy", {"mesh.job.attempt": job.attempt})
        self._journal.update(job, state=job.state.value, attempt=job.attempt)
        log.info(
            "job %s (%s) attempt %d deploying %s",
            job.job_id,
            job.name,
            job.attempt,
            f"from {restore.path}" if restore else "from the start",
        )
        self._deployer.deploy(job)

    def resume(self) -> None:
        """Read the jobs of a previous run: ended ones for list/status; the others resume
        as a new attempt from their latest checkpoint once enough nodes registered."""
        stored, problems = self._journal.load()
        for problem in problems:
            log.error("cannot resume %s", problem)
        now = self._clock.monotonic_ms()
        for row in stored:
            try:
                job = JobRecord.from_stored(row)
            except MeshError as exc:
                log.error("cannot resume job %s: %s", row.job_id, exc)
                continue
            self._jobs[job.job_id] = job
            if job.done:
                continue
            if job.state in (JobState.CREATED, JobState.CANCELLING):
                job.state = JobState.CANCELLING
                self._end(job, JobState.CANCELED)
                continue
            job.state = JobState.RESTARTING  # not a failure: the strategy is not asked
            job.restart_at_ms = job.cancel_deadline_ms = now
            self._flows.begin(job, "failover", {"mesh.failover.cause": "the coordinator restarted"})
            self._journal.update(job, state=job.state.value)
            log.info(
                "job %s (%s) resumes after the coordinator restarted (attempt %d was running)",
                job.job_id,
                job.name,
                job.attempt,
            )
