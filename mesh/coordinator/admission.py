"""Admitting a submitted job: check that it can ever be placed, resolve the checkpoint
or savepoint it starts from, record it, and hand it to the lifecycle to be placed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio

from mesh.coordinator.background import BackgroundTasks
from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.journal import JobJournal
from mesh.coordinator.lifecycle import JobLifecycle
from mesh.coordinator.outbound import Caller, ControlOut
from mesh.coordinator.restart import RestartTracker
from mesh.coordinator.restore import resolve_restore
from mesh.coordinator.scheduler import check_co_location
from mesh.errors import CheckpointError, MeshError, SchedulingError, StateError
from mesh.graph.execution import build_execution_graph
from mesh.graph.logical import LogicalGraph
from mesh.protocol.messages import ErrorReply, RestoreSpec, SubmitJob, SubmitReply
from mesh.protocol.states import JobState
from mesh.state.metadata import CheckpointMetadata
from mesh.time.clock import Clock

__all__ = ["JobAdmission"]

log = logging.getLogger("mesh.coordinator")


class JobAdmission:
    """Turns ``SubmitJob`` requests into jobs."""

    def __init__(
        self,
        *,
        config: CoordinatorConfig,
        clock: Clock,
        jobs: JobTable,
        out: ControlOut,
        journal: JobJournal,
        lifecycle: JobLifecycle,
        background: BackgroundTasks,
    ) -> None:
        self._config = config
        self._clock = clock
        self._jobs = jobs
        self._out = out
        self._journal = journal
        self._lifecycle = lifecycle
        self._background = background

    def on_submit(self, caller: Caller, msg: SubmitJob) -> SubmitReply | ErrorReply | None:
        """Admit a job; one that restores is answered once its restore point is checked."""
        graph = LogicalGraph.from_dict(msg.graph)
        if not msg.restore_from:
            return self._admit(msg, graph, None, None)
        self._background.start_soon(self._submit_restored, caller, msg, graph)
        return None

    async def _submit_restored(self, caller: Caller, msg: SubmitJob, graph: LogicalGraph) -> None:
        """Check the restore point off the event loop (it hashes every state file)."""
        assert msg.restore_from is not None
        reply: SubmitReply | ErrorReply
        try:
            restore, metadata = await anyio.to_thread.run_sync(
                resolve_restore, msg.restore_from, graph
            )
        except CheckpointError as exc:
            reply = ErrorReply(f"cannot restore: {exc}", "bad_restore_point")
        else:
            try:
                reply = self._admit(msg, graph, restore, metadata)
            except MeshError as exc:
                reply = ErrorReply(str(exc), type(exc).__name__)
        self._out.reply(caller, reply)

    def _admit(
        self,
        msg: SubmitJob,
        graph: LogicalGraph,
        restore: RestoreSpec | None,
        metadata: CheckpointMetadata | None,
    ) -> SubmitReply | ErrorReply:
        """Create, record and place a submitted job."""
        eg = build_execution_graph(graph)
        try:
            check_co_location(eg)  # no number of slots would make such a job fit
        except SchedulingError as exc:
            return ErrorReply(
                f"cannot schedule job {graph.config.name!r}: {exc}", "bad_co_location"
            )
        first_id = 1
        if restore is not None and metadata is not None:
            source = self._jobs.get(metadata.job_id)
            if source is not None and not source.done:
                # Both would write (and clean up) the same sink transactions.
                return ErrorReply(
                    f"cannot restore: {restore.path} was taken from job {source.job_id} "
                    f"({source.name}), which is still {source.state.value}; stop it first "
                    f"(mesh cancel {source.job_id})",
                    "bad_restore_point",
                )
            first_id = metadata.checkpoint_id + 1
        job = JobRecord(
            job_id=self._jobs.new_id(), submission=msg, graph=eg, created_ms=self._clock.now_ms()
        )
        job.restore, job.next_checkpoint_id = restore, first_id
        job.restore_path = restore.path if restore is not None else None
        job.restarts = RestartTracker(graph.config.restart)
        base = (
            Path(msg.base_dir) / graph.config.checkpoint_dir
            if graph.config.checkpoint_dir
            else self._config.checkpoint_base
        )
        job.checkpoint_root = str(base / job.job_id)
        self._jobs[job.job_id] = job
        log.info("job %s (%s) submitted", job.job_id, job.name)
        job.transition(JobState.SCHEDULING)
        try:
            self._journal.add(job)
        except StateError as exc:
            del self._jobs[job.job_id]
            return ErrorReply(f"job not accepted: {exc}", "coordinator_storage")
        self._lifecycle.flows.begin(job, "submit", _restore_attributes(graph, restore, metadata))
        self._lifecycle.flows.step(job, "schedule")
        self._lifecycle.place(job)
        return SubmitReply(job_id=job.job_id, waiting=job.waiting)


def _restore_attributes(
    graph: LogicalGraph, restore: RestoreSpec | None, metadata: CheckpointMetadata | None
) -> dict[str, Any]:
    """What a submission's trace says about its restore point: where it came from and
    which operators run at another parallelism than they were saved at (a rescale)."""
    if restore is None or metadata is None:
        return {"mesh.job.restored_from": ""}
    rescaled = sorted(
        f"{op.uid}: {metadata.operators[op.uid].parallelism} -> {op.parallelism}"
        for op in graph.operators
        if op.uid in metadata.operators and metadata.operators[op.uid].parallelism != op.parallelism
    )
    return {
        "mesh.job.restored_from": restore.path,
        "mesh.restore.job.id": metadata.job_id,
        "mesh.restore.checkpoint.id": metadata.checkpoint_id,
        "mesh.restore.checkpoint.kind": metadata.kind.value,
        "mesh.rescaled": bool(rescaled),
        "mesh.rescaled.operators": rescaled,
    }
