"""A job's life after admission: placed, deployed, running, failing over, cancelled,
ended — driven by what nodes report and by the coordinator's clock.

A job goes: SCHEDULING (waiting for enough slots, up to ``slot_timeout``) → deploy to
every node → (all nodes ready) RUNNING → every subtask finished → FINISHED. A failed
subtask, a lost node or a node that leaves fails the attempt: if the job's restart
strategy allows, the job fails over (``failover``); otherwise it is FAILED with the root
cause. A user's cancel stops every subtask (CANCELLING → CANCELED).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import orjson

from mesh.coordinator.background import BackgroundTasks
from mesh.coordinator.checkpointing import checkpoint_manager
from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.deploy import Deployer, GaveUpWaiting
from mesh.coordinator.failover import JobFailover
from mesh.coordinator.flows import JobFlows
from mesh.coordinator.jobs import IllegalTransition, JobRecord, JobTable
from mesh.coordinator.journal import JobJournal
from mesh.coordinator.outbound import ControlOut
from mesh.coordinator.registry import NodeInfo, NodeRegistry
from mesh.coordinator.store import CheckpointStore
from mesh.protocol.messages import (
    AckCheckpoint,
    CollectBatch,
    DeclineCheckpoint,
    DeployResult,
    TaskUpdate,
)
from mesh.protocol.states import JobState, TaskState
from mesh.time.clock import Clock
from mesh.transport.drops import DropCounter

__all__ = ["JobLifecycle"]

log = logging.getLogger("mesh.coordinator")

# How a job that ended reads after "the job is ...".
_ENDED_AS = {
    JobState.FINISHED: "finished",
    JobState.CANCELED: "cancelled",
    JobState.FAILED: "failing",
}

_ALL_FINISHED = frozenset({TaskState.FINISHED})
# Every subtask's input ended (sinks wait for the job's end to commit).
_INPUT_ENDED = frozenset({TaskState.FINISHED, TaskState.ENDING})


class JobLifecycle:
    """Moves jobs through their states; the one place that fails, cancels or ends one."""

    def __init__(
        self,
        *,
        config: CoordinatorConfig,
        clock: Clock,
        nodes: NodeRegistry,
        jobs: JobTable,
        out: ControlOut,
        journal: JobJournal,
        store: CheckpointStore,
        background: BackgroundTasks,
        drops: DropCounter,
    ) -> None:
        self._config = config
        self._clock = clock
        self._nodes = nodes
        self._jobs = jobs
        self._out = out
        self._journal = journal
        self._store = store
        self._drops = drops
        self.deployer = Deployer(config, clock, nodes, out)
        self.flows = JobFlows()
        self.failover = JobFailover(
            config=config,
            clock=clock,
            nodes=nodes,
            jobs=jobs,
            deployer=self.deployer,
            journal=journal,
            store=store,
            background=background,
            flows=self.flows,
            fail_for_good=self.fail_for_good,
            end=self.end,
        )
        #: Told each job that reaches a final state.
        self.on_end: Callable[[JobRecord], None] | None = None

    # -- placing and starting ---------------------------------------------------------------

    def place(self, job: JobRecord) -> None:
        """Give a SCHEDULING job its slots and deploy it; or let it wait for slots (it
        fails with the scheduler's explanation once ``slot_timeout`` passes)."""
        try:
            assignments = self.deployer.slots_for(job, "schedule")
        except GaveUpWaiting as exc:
            self.fail_for_good(job, str(exc))
            return
        if assignments is None:
            return
        job.assignments = assignments
        self._nodes.allocate(job.job_id, job.attempt, assignments)
        self.flows.step(job, "deploy", {"mesh.job.nodes": len(job.nodes)})
        self.deployer.deploy(job)

    def job_for(self, job_id: str, attempt: int, what: str) -> JobRecord | None:
        """The job a node's message is about, if it is of the current attempt.

        Messages of an older attempt (a failed-over one) are dropped and counted.
        """
        job = self._jobs.get(job_id)
        if job is None:
            return None
        if job.attempt != attempt:
            self._drops.drop(
                "stale_attempt",
                f"{what} for job {job_id} attempt {attempt}; the job is at attempt {job.attempt}",
                expected=True,
            )
            return None
        return job

    def on_deploy_result(self, msg: DeployResult) -> None:
        """A node prepared its subtasks (or could not): start once every node is ready."""
        job = self.job_for(msg.job_id, msg.attempt, "deploy result")
        if job is None or job.state is not JobState.SCHEDULING:
            return
        if not msg.ok:
            # The job's code or its files are at fault: restarting would fail the same way.
            self.fail_for_good(job, msg.error or f"deploy failed on node {msg.node_id}")
            return
        job.deploy_pending.discard(msg.node_id)
        if not job.deploy_pending:
            job.transition(JobState.RUNNING)
            job.started_ms = job.started_ms or self._clock.now_ms()
            self._journal.update(job, state=job.state.value, started_ms=job.started_ms)
            job.checkpoints = checkpoint_manager(
                job,
                config=self._config,
                store=self._store,
                clock=self._clock,
                out=self._out,
                journal=self._journal,
                fail=lambda job, reason: self.fail(job, reason, cause="checkpoints"),
            )
            self.deployer.start(job)
            self.flows.end(job)
            log.info("job %s (%s) running on %d node(s)", job.job_id, job.name, len(job.nodes))

    # -- what subtasks report ---------------------------------------------------------------

    def on_task_update(self, msg: TaskUpdate) -> None:
        """A subtask changed state."""
        job = self.job_for(msg.job_id, msg.attempt, "task update")
        if job is None:
            return
        job.update_metrics(msg.metrics, self._clock.monotonic_ms(), from_heartbeat=False)
        if job.done or job.state is JobState.RESTARTING:
            return
        state = msg.metrics.state
        if job.checkpoints is not None:
            job.checkpoints.on_subtask_state(msg.metrics.subtask, state)
        if state is TaskState.FAILED:
            error = msg.error or f"subtask {msg.metrics.subtask} failed"
            self.fail(job, error, recoverable=msg.recoverable, cause="task_exception")
        elif state is TaskState.CANCELED and job.state in (JobState.RUNNING, JobState.SCHEDULING):
            # Nobody asked: its node stopped it (it lost the coordinator for too long).
            self.fail(
                job,
                f"subtask {msg.metrics.subtask} was stopped by node {msg.node_id}"
                + (f": {msg.error}" if msg.error else ""),
                cause="task_stopped",
            )
        elif job.state is JobState.RUNNING and job.all_subtasks(_ALL_FINISHED):
            self.end(job, JobState.FINISHED)
        elif (
            job.state is JobState.RUNNING
            and not job.final_commit_sent
            and job.all_subtasks(_INPUT_ENDED)
        ):
            # Every subtask's input ended: sinks may make their last output visible —
            # after a final checkpoint that holds it, if the job checkpoints.
            job.final_commit_sent = True
            manager = job.checkpoints
            if manager is not None and manager.policy.interval_ms is not None:
                manager.finish(lambda: self._commit_final(job))
            else:
                if manager is not None:
                    manager.shutdown("finishing")
                self._commit_final(job)
        elif job.state is JobState.CANCELLING and job.subtasks_done():
            self.end(job, JobState.CANCELED)

    def _commit_final(self, job: JobRecord) -> None:
        if job.state is JobState.RUNNING:
            self.deployer.commit_final(job)

    def on_collect(self, msg: CollectBatch) -> None:
        """Records a ``Collect`` sink sent back: kept for the client to fetch."""
        job = self.job_for(msg.job_id, msg.attempt, "collected records")
        if job is None:
            return
        try:
            valid = isinstance(orjson.loads(msg.records), list)
        except orjson.JSONDecodeError:
            valid = False
        if not valid:
            log.warning("job %s: dropped collected records that are not a JSON list", job.job_id)
            return
        job.collected.append(msg.records)

    def on_ack_checkpoint(self, msg: AckCheckpoint) -> None:
        """A subtask wrote its part of a checkpoint."""
        job = self.job_for(msg.job_id, msg.attempt, f"ack of checkpoint {msg.checkpoint_id}")
        if job is not None and job.checkpoints is not None:
            job.checkpoints.on_ack(msg)

    def on_decline_checkpoint(self, msg: DeclineCheckpoint) -> None:
        """A subtask could not take its part of a checkpoint."""
        job = self.job_for(msg.job_id, msg.attempt, f"decline of checkpoint {msg.checkpoint_id}")
        if job is not None and job.checkpoints is not None:
            job.checkpoints.on_decline(msg)

    # -- nodes going away -------------------------------------------------------------------

    def node_gone(self, node: NodeInfo, why: str, *, left: bool = False) -> None:
        """``node`` was lost (or left): forget it and fail the attempts that used it."""
        if self._nodes.get(node.node_id) is node:
            self._nodes.remove(node.node_id)
        what = "left the cluster" if left else "lost"
        if left:
            log.info("node %s %s: %s", node.node_id, what, why)
        else:
            log.warning("node %s %s: %s", node.node_id, what, why)
        for job in list(self._jobs.values()):
            if not job.done and node.node_id in job.nodes:
                job.mark_lost(node.node_id)
                self.fail(
                    job,
                    f"node {node.node_id} ({node.host}, pid {node.pid}) {what}: {why}",
                    cause="node_left" if left else "node_lost",
                )

    def node_leaving(self, node: NodeInfo, reason: str) -> None:
        """``node`` is stopping: fail over its jobs now. Its subtasks count as running
        until they report, so the next attempt of a job never runs beside them."""
        node.leaving = True
        log.info("node %s is leaving: %s", node.node_id, reason)
        for job in list(self._jobs.values()):
            if not job.done and node.node_id in job.nodes:
                self.fail(
                    job,
                    f"node {node.node_id} ({node.host}, pid {node.pid}) left the cluster: {reason}",
                    cause="node_left",
                )

    # -- the clock --------------------------------------------------------------------------

    def tick(self) -> None:
        """Let checkpoint managers trigger and expire checkpoints; place jobs waiting for
        slots (oldest first) and restart jobs when due."""
        for job in list(self._jobs.values()):
            if job.state is JobState.RUNNING and job.checkpoints is not None:
                job.checkpoints.tick()
            elif job.state is JobState.SCHEDULING and not job.assignments:
                self.place(job)
            elif job.state is JobState.RESTARTING:
                self.failover.restart_when_ready(job)

    def expire_cancellations(self, now_ms: float) -> None:
        """Jobs whose cancellation took longer than ``cancel_timeout`` end CANCELED."""
        for job in list(self._jobs.values()):
            if job.state is JobState.CANCELLING and now_ms > job.cancel_deadline_ms:
                log.warning("job %s: cancellation timed out; marking it CANCELED", job.job_id)
                self.end(job, JobState.CANCELED)

    # -- failing, cancelling, ending ----------------------------------------------------------

    def fail(
        self, job: JobRecord, error: str, *, recoverable: bool = True, cause: str = "error"
    ) -> None:
        """The current attempt failed: fail over if the restart strategy allows. A
        failure that is not ``recoverable`` (no restart can fix it) fails the job now;
        ``cause`` (one of ``FAILURE_CAUSES``) is kept with the failure."""
        if job.done or job.state is JobState.RESTARTING:
            return  # the failed attempt is being cancelled anyway
        if job.state is JobState.CANCELLING:
            self.fail_for_good(job, error)
            return
        job.record_failure(error, self._clock.now_ms(), cause)
        if not recoverable:
            self.fail_for_good(job, f"no restart can fix this failure, so none is tried:\n{error}")
            return
        delay = job.restarts.on_failure(self._clock.monotonic_ms())
        if delay is None:
            cause = job.restarts.gave_up()
            if job.restarts.kind == "none":
                self.fail_for_good(job, error)
            else:
                self.fail_for_good(job, f"{cause}; the last failure:\n{error}")
            return
        self.flows.begin(
            job,
            "failover",
            {"mesh.failover.cause": error, "mesh.failover.delay_ms": delay},
        )
        job.failures[-1]["trace_id"] = self.flows.trace_id(job)
        self.flows.step(job, "cancel")
        self.failover.restart(job, error, delay)

    def fail_for_good(self, job: JobRecord, error: str) -> None:
        """The job fails without restarting."""
        if job.done:
            return
        log.error("job %s (%s) failed: %s", job.job_id, job.name, error)
        job.error = error
        self.deployer.cancel(job, "failure")
        self.end(job, JobState.FAILED)

    def cancel(self, job: JobRecord, reason: str) -> None:
        """Stop every subtask of the job; it ends CANCELED once they stopped."""
        if job.state is JobState.RESTARTING and (job.subtasks_done() or not job.nodes):
            self.end(job, JobState.CANCELED)
            log.info("job %s (%s) cancelled while restarting", job.job_id, job.name)
            return
        job.transition(JobState.CANCELLING)
        self._journal.update(job, state=job.state.value)
        if job.checkpoints is not None:
            job.checkpoints.shutdown("cancelling")
        job.cancel_deadline_ms = self._clock.monotonic_ms() + self._config.cancel_timeout_ms
        self.deployer.cancel(job, reason)
        if job.subtasks_done() or not job.nodes:
            self.end(job, JobState.CANCELED)
        log.info("job %s (%s) cancelling (%s)", job.job_id, job.name, reason)

    def end(self, job: JobRecord, state: JobState) -> None:
        """The job reached a final ``state``: free its slots, keep its summary."""
        try:
            job.transition(state)
        except IllegalTransition:
            log.exception("job %s", job.job_id)
            return
        job.ended_ms = self._clock.now_ms()
        job.waiting = None
        self.flows.end(
            job,
            error=(job.error or "failed") if state is JobState.FAILED else None,
            attributes={"mesh.job.state": state.value},
        )
        if job.checkpoints is not None:
            # Stopped, it triggers nothing more; it stays for the status summary.
            job.checkpoints.shutdown(_ENDED_AS[state])
        self._nodes.release(job.job_id)
        # The code bundle is only needed to deploy; a finished job keeps its summary.
        job.submission = dataclasses.replace(job.submission, bundle=b"")
        if state is not JobState.FAILED:
            log.info("job %s (%s) %s", job.job_id, job.name, state.value)
        self._journal.update(job, state=state.value, ended_ms=job.ended_ms, error=job.error)
        self._journal.ended(job, retained=self._config.retained_jobs)
        if self.on_end is not None:
            self.on_end(job)
