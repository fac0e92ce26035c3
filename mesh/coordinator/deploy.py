"""Getting a job attempt onto nodes and off them again: slots, deploy, start, the final
commit and cancellation — the messages, not the decisions (``lifecycle`` decides)."""

from __future__ import annotations

import logging

from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.jobs import JobRecord
from mesh.coordinator.outbound import ControlOut
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.scheduler import schedule
from mesh.errors import SchedulingError
from mesh.protocol.messages import (
    CancelTasks,
    CommitFinal,
    DeployTasks,
    StartTasks,
    TaskAssignment,
)
from mesh.time.clock import Clock
from mesh.transport.tokens import new_secret

__all__ = ["Deployer", "GaveUpWaiting"]

log = logging.getLogger("mesh.coordinator")


class GaveUpWaiting(SchedulingError):
    """A job waited ``slot_timeout`` for slots and did not get them."""


class Deployer:
    """Places job attempts in slots and tells nodes to deploy, start, commit and cancel."""

    def __init__(
        self, config: CoordinatorConfig, clock: Clock, nodes: NodeRegistry, out: ControlOut
    ) -> None:
        self._config = config
        self._clock = clock
        self._nodes = nodes
        self._out = out

    def slots_for(self, job: JobRecord, what: str) -> list[TaskAssignment] | None:
        """A placement for ``job`` ("schedule" or "restart" it), or None while it waits for
        slots: it waits up to ``slot_timeout`` (``job.waiting`` says why); after that,
        raises GaveUpWaiting with the scheduler's explanation."""
        now = self._clock.monotonic_ms()
        try:
            assignments = schedule(
                job.graph,
                self._nodes.free_slots(),
                self._nodes.totals(),
                placement=self._config.placement,
            )
        except SchedulingError as exc:
            if job.slot_deadline_ms is None:
                job.slot_deadline_ms = now + self._config.slot_timeout_ms
                log.warning(
                    "job %s (%s) waits for slots to %s: %s", job.job_id, job.name, what, exc
                )
            elif now > job.slot_deadline_ms:
                raise GaveUpWaiting(
                    f"cannot {what} job {job.name!r}: no slots within "
                    f"{self._config.slot_timeout_ms} ms: {exc}"
                ) from None
            job.waiting = str(exc)
            return None
        if job.waiting is not None:
            log.info("job %s (%s) got its slots", job.job_id, job.name)
        job.waiting, job.slot_deadline_ms = None, None
        return assignments

    def deploy(self, job: JobRecord) -> None:
        """Send the attempt's subtasks to every node it uses (they prepare, then answer)."""
        msg = job.submission
        peers = [self._nodes.nodes[n].address for n in sorted(job.nodes)]
        job.deploy_pending = set(job.nodes)
        deploy = DeployTasks(  # the same for every node: each finds its subtasks in it
            job_id=job.job_id,
            attempt=job.attempt,
            graph=msg.graph,
            fingerprint=job.graph.logical.fingerprint(),
            job_name=msg.job_name,
            entry=msg.entry,
            build_args=msg.build_args,
            base_dir=msg.base_dir,
            assignments=job.assignments,
            peers=peers,
            channels=self._config.channels,
            bundle=msg.bundle,
            restore=job.restore,
            channel_secret=new_secret(),  # a new one per attempt: old tokens stop working
        )
        for node_id in sorted(job.nodes):
            self._out.to_node(node_id, deploy)

    def start(self, job: JobRecord) -> None:
        """Every node is ready: start the attempt's subtasks."""
        for node_id in sorted(job.nodes):
            self._out.to_node(node_id, StartTasks(job_id=job.job_id, attempt=job.attempt))

    def commit_final(self, job: JobRecord) -> None:
        """Every subtask's input ended: sinks make their last output visible."""
        for node_id in sorted(job.nodes):
            self._out.to_node(node_id, CommitFinal(job_id=job.job_id, attempt=job.attempt))

    def cancel(self, job: JobRecord, reason: str) -> None:
        """Stop the attempt's subtasks on every node still registered."""
        # A person's cancel of a job without checkpoints keeps what its sinks wrote; with
        # checkpoints only checkpointed output is ever visible, and a failure keeps
        # nothing uncommitted.
        commit = reason == "user" and job.graph.logical.config.checkpoint_interval_ms is None
        cancel = CancelTasks(job_id=job.job_id, attempt=job.attempt, reason=reason, commit=commit)
        for node_id in sorted(job.nodes):
            if self._nodes.get(node_id) is not None:
                self._out.to_node(node_id, cancel)
