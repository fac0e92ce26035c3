"""Clients' requests about jobs and nodes once they exist: list, status, cancel, fetch
collected records, savepoints, checkpoint history, nodes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mesh.coordinator.checkpoints import SavepointRequest
from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.lifecycle import JobLifecycle
from mesh.coordinator.outbound import Caller, ControlOut
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.store import CheckpointStore
from mesh.coordinator.views import job_status
from mesh.errors import MeshError
from mesh.protocol.messages import (
    Ack,
    AwaitJobEnd,
    CancelJob,
    CheckpointList,
    CollectedReply,
    ErrorReply,
    FetchCollected,
    GetJobStatus,
    JobList,
    JobStatusReply,
    ListCheckpoints,
    ListJobs,
    ListNodes,
    NodeList,
    SavepointTaken,
    TakeSavepoint,
)
from mesh.protocol.states import JobState
from mesh.time.clock import Clock

__all__ = ["ClientRequests"]

# Most clients that may wait for one job to end (each costs a reply when it does).
_MAX_AWAITING = 100
# Most records one FetchCollected reply carries (the client asks again for more).
_COLLECT_BATCHES_PER_REPLY = 64


class ClientRequests:
    """Answers what a client asks of existing jobs and of the cluster."""

    def __init__(
        self,
        *,
        clock: Clock,
        nodes: NodeRegistry,
        jobs: JobTable,
        store: CheckpointStore,
        out: ControlOut,
        lifecycle: JobLifecycle,
    ) -> None:
        self._clock = clock
        self._nodes = nodes
        self._jobs = jobs
        self._store = store
        self._out = out
        self._lifecycle = lifecycle
        # Clients waiting for a job to end, by job id (answered by ``job_ended``).
        self._awaiting: dict[str, dict[bytes, Caller]] = {}

    def on_list_jobs(self, caller: Caller, msg: ListJobs) -> JobList:
        """One summary per job, oldest first."""
        now = self._clock.now_ms()
        jobs = sorted(self._jobs.values(), key=lambda j: j.created_ms)
        return JobList(jobs=[j.summary(now) for j in jobs])

    def on_status(self, caller: Caller, msg: GetJobStatus) -> JobStatusReply:
        """One job's status."""
        return JobStatusReply(status=job_status(self._jobs.find(msg.job_id), self._clock.now_ms()))

    def on_await_end(self, caller: Caller, msg: AwaitJobEnd) -> JobStatusReply | ErrorReply | None:
        """A job's status once it has ended: at once if it has, else when it does."""
        job = self._jobs.find(msg.job_id)
        if job.done:
            return JobStatusReply(status=job_status(job, self._clock.now_ms()))
        # One wait per client: a client that asks again (after giving up on a wait, or
        # restarted with the same identity) replaces its older one.
        waiting = self._awaiting.setdefault(job.job_id, {})
        if caller.identity not in waiting and len(waiting) >= _MAX_AWAITING:
            return ErrorReply(f"too many clients wait for job {job.job_id}", "busy")
        waiting[caller.identity] = caller
        return None

    def job_ended(self, job: JobRecord) -> None:
        """Answer the clients waiting for ``job`` to end."""
        waiting = self._awaiting.pop(job.job_id, {})
        if waiting:
            reply = JobStatusReply(status=job_status(job, self._clock.now_ms()))
            for caller in waiting.values():
                self._out.reply(caller, reply)

    def on_cancel(self, caller: Caller, msg: CancelJob) -> Ack:
        """A person cancels a job."""
        job = self._jobs.find(msg.job_id)
        if job.done:
            return Ack(detail=f"job {job.job_id} is already {job.state.value}")
        if job.state is JobState.CANCELLING:
            return Ack(detail="already cancelling")
        self._lifecycle.cancel(job, "user")
        return Ack(detail="cancelling")

    def on_fetch(self, caller: Caller, msg: FetchCollected) -> CollectedReply:
        """Records ``Collect`` sinks sent back, from ``msg.offset`` on."""
        job = self._jobs.find(msg.job_id)
        if msg.offset < 0:
            raise MeshError(f"fetch offset must be >= 0, got {msg.offset}")
        batches = job.collected[msg.offset : msg.offset + _COLLECT_BATCHES_PER_REPLY]
        next_offset = msg.offset + len(batches)
        complete = job.done and next_offset >= len(job.collected)
        # Each batch is an orjson array: splice them without decoding.
        inner = b",".join(batch[1:-1] for batch in batches if batch != b"[]")
        return CollectedReply(
            next_offset=next_offset, complete=complete, records=b"[" + inner + b"]"
        )

    def on_take_savepoint(self, caller: Caller, msg: TakeSavepoint) -> ErrorReply | None:
        """Take a savepoint (answered when it completes), then cancel if asked."""

        def done(path: str | None, checkpoint_id: int, error: str | None) -> None:
            if path is None:
                self._out.reply(
                    caller, ErrorReply(f"savepoint failed: {error}", "savepoint_failed")
                )
            else:
                self._out.reply(caller, SavepointTaken(path=path, checkpoint_id=checkpoint_id))

        refused = self.take_savepoint(
            self._jobs.find(msg.job_id), msg.directory or None, cancel=msg.cancel, done=done
        )
        return ErrorReply(refused, "not_running") if refused else None

    def take_savepoint(
        self,
        job: JobRecord,
        directory: str | None,
        *,
        cancel: bool,
        done: Callable[[str | None, int, str | None], None],
    ) -> str | None:
        """Start a savepoint of ``job`` into ``directory`` (default: next to its
        checkpoints); ``done(path, id, error)`` is called when it ends, after the job
        started cancelling if ``cancel``. Returns why it cannot start, or None."""
        if job.state is not JobState.RUNNING or job.checkpoints is None:
            return f"job {job.job_id} is {job.state.value}: only a running job takes savepoints"
        target = Path(directory) if directory else Path(job.checkpoint_root).parent / "savepoints"

        def ended(path: str | None, checkpoint_id: int, error: str | None) -> None:
            if path is not None and cancel and job.state is JobState.RUNNING:
                self._lifecycle.cancel(job, "savepoint")
            done(path, checkpoint_id, error)

        job.checkpoints.take_savepoint(SavepointRequest(directory=target, done=ended))
        return None

    def on_list_checkpoints(self, caller: Caller, msg: ListCheckpoints) -> CheckpointList:
        """A job's checkpoint and savepoint history."""
        job = self._jobs.find(msg.job_id)
        return CheckpointList(checkpoints=[r.to_dict() for r in self._store.history(job.job_id)])

    def on_list_nodes(self, caller: Caller, msg: ListNodes) -> NodeList:
        """Every registered node."""
        now = self._clock.monotonic_ms()
        return NodeList(nodes=[n.summary(now) for n in self._nodes.nodes.values()])
