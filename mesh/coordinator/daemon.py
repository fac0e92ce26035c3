"""The coordinator daemon (Flink's JobManager): nodes, jobs, scheduling, lifecycle.

One ROUTER socket serves nodes (register, heartbeat, deploy results, task updates,
collected records) and clients (submit, list, status, cancel, fetch results). Each
message is handled to completion on the event loop; nothing is awaited in between
except sends, so the registries are never seen half-updated.

A job goes: submit → schedule (waiting for enough slots, up to ``slot_timeout``) →
deploy to every node → (all nodes ready) start → every subtask finished → FINISHED. A
failed subtask, a lost node or a node that leaves (SIGTERM) fails the attempt: if the
job's restart strategy allows, the job fails over (RESTARTING: cancel what is left of
the attempt, wait out the delay and for enough slots, deploy the next attempt from the
latest completed checkpoint); otherwise the job is FAILED with the root cause. A user's
cancel stops every subtask.

Jobs live in the coordinator's database too: a coordinator that restarts resumes every
job that had not ended, as a new attempt from its latest completed checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson

from mesh._version import __version__
from mesh.coordinator.checkpoints import CheckpointManager, JobView, SavepointRequest
from mesh.coordinator.failover import JobFailover
from mesh.coordinator.jobs import IllegalTransition, JobRecord, JobState, JobTable
from mesh.coordinator.jobstore import JobStore
from mesh.coordinator.registry import NodeInfo, NodeRegistry
from mesh.coordinator.restart import RestartTracker
from mesh.coordinator.restore import resolve_restore
from mesh.coordinator.scheduler import check_co_location, schedule
from mesh.coordinator.store import CheckpointStore
from mesh.coordinator.trigger import CheckpointPolicy
from mesh.errors import CheckpointError, FrameError, MeshError, SchedulingError, StateError
from mesh.graph.execution import build_execution_graph
from mesh.graph.logical import LogicalGraph
from mesh.protocol import codec
from mesh.protocol.messages import (
    Ack,
    AckCheckpoint,
    CancelJob,
    CancelTasks,
    ChannelSettings,
    CheckpointList,
    CollectBatch,
    CollectedReply,
    CommitFinal,
    DeclineCheckpoint,
    DeployResult,
    DeployTasks,
    ErrorReply,
    FetchCollected,
    GetJobStatus,
    Heartbeat,
    HeartbeatAck,
    JobList,
    JobStatusReply,
    ListCheckpoints,
    ListJobs,
    ListNodes,
    NodeLeaving,
    NodeList,
    PeerAddress,
    RegisterNode,
    RegisterReply,
    Reregister,
    RestoreSpec,
    SavepointTaken,
    StartTasks,
    SubmitJob,
    SubmitReply,
    TakeSavepoint,
    TaskAssignment,
    TaskUpdate,
)
from mesh.state.metadata import CheckpointMetadata
from mesh.time.clock import Clock, SystemClock
from mesh.transport.drops import DropCounter
from mesh.transport.sockets import Outbox, SocketFactory, SocketKind

__all__ = ["Coordinator", "CoordinatorConfig"]

log = logging.getLogger("mesh.coordinator")

# How a job that ended reads after "the job is ...".
_ENDED_AS = {
    JobState.FINISHED: "finished",
    JobState.CANCELED: "cancelled",
    JobState.FAILED: "failing",
}

# Most records one FetchCollected reply carries (the client asks again for more).
_COLLECT_BATCHES_PER_REPLY = 64


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Settings of a coordinator daemon."""

    bind: str = "tcp://127.0.0.1:5550"
    state_dir: Path = Path(".mesh/coordinator")
    heartbeat_interval_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    placement: str = "spread"
    cancel_timeout_ms: int = 10_000
    slot_timeout_ms: int = 300_000  # a job (new or restarting) waits this long for slots
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    retained_jobs: int = 100  # finished jobs kept for list/status (oldest dropped first)
    checkpoint_dir: Path | None = None  # default: <state_dir>/checkpoints
    checkpoint_timeout_ms: int = 600_000
    checkpoint_min_pause_ms: int = 0
    tolerable_checkpoint_failures: int = 3
    retained_checkpoints: int = 3

    @property
    def checkpoint_base(self) -> Path:
        """Where checkpoints go unless a job says otherwise."""
        return self.checkpoint_dir or self.state_dir / "checkpoints"


class Coordinator(JobFailover):
    """A coordinator daemon."""

    def __init__(self, config: CoordinatorConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.nodes = NodeRegistry()
        self.jobs = JobTable()
        self.endpoint: str | None = None
        self.drops = DropCounter(log)
        self._outbox: Outbox | None = None
        self.store: CheckpointStore | None = None
        self.job_store: JobStore | None = None
        # The client request being handled: (identity, rid), for replies sent later.
        self._request: tuple[bytes, str | None] = (b"", None)
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status.started(endpoint)`` once bound."""
        self.store = CheckpointStore(self.config.state_dir / "coordinator.db")
        self.job_store = JobStore(self.config.state_dir / "coordinator.db")
        self._resume_jobs()
        with SocketFactory() as factory:
            router = factory.bind(SocketKind.ROUTER, self.config.bind)
            self.endpoint = router.endpoint
            self._outbox = Outbox(router)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._outbox.pump)
                tg.start_soon(self._monitor)
                tg.start_soon(self._ticker)
                log.info("coordinator listening on %s", router.endpoint)
                task_status.started(router.endpoint)
                while True:
                    frames = router.recv_nowait()
                    if frames is None:
                        await router.wait_readable()
                        continue
                    try:
                        self._on_frames(frames)
                    except Exception:  # a bug must not take the cluster down
                        log.exception("error while handling a message")
                    await anyio.lowlevel.checkpoint()

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, identity: bytes, msg: Any, rid: str | None = None) -> None:
        assert self._outbox is not None
        self._outbox.send([identity, *codec.encode(msg, rid=rid)])

    def _send_to_node(self, node_id: str, msg: Any) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            log.warning("cannot send %s to node %s: not registered", type(msg).__name__, node_id)
            return
        self._send(node.identity, msg)

    def _on_frames(self, frames: list[bytes]) -> None:
        identity, body = frames[0], frames[1:]
        try:
            envelope = codec.decode(body)
        except FrameError as exc:
            self.drops.drop("malformed", f"{exc} (from {identity.decode('utf-8', 'replace')!r})")
            return
        msg, rid = envelope.message, envelope.rid
        self._request = (identity, rid)
        handler = self._handlers.get(type(msg))
        if handler is None:
            self._send(identity, ErrorReply(f"unexpected message {msg.TYPE}", "bad_request"), rid)
            return
        try:
            reply = handler(self, identity, msg)
        except MeshError as exc:
            reply = ErrorReply(str(exc), type(exc).__name__)
        if reply is not None:
            self._send(identity, reply, rid)

    def now(self) -> int:
        """Wall clock, epoch ms."""
        return self.clock.now_ms()

    # -- nodes ----------------------------------------------------------------------------

    def _on_register(self, identity: bytes, msg: RegisterNode) -> RegisterReply:
        if msg.version != __version__:
            return RegisterReply(
                ok=False,
                error=f"node runs mesh {msg.version}, coordinator runs {__version__}",
            )
        if msg.slots < 1:
            return RegisterReply(ok=False, error=f"a node needs at least 1 slot, got {msg.slots}")
        now = self.clock.monotonic_ms()
        previous = self.nodes.register(
            NodeInfo(
                node_id=msg.node_id,
                identity=identity,
                slots=msg.slots,
                address=PeerAddress(msg.node_id, msg.data_endpoint, msg.control_endpoint),
                host=msg.host,
                pid=msg.pid,
                registered_ms=now,
                last_heartbeat_ms=now,
            )
        )
        node = self.nodes.nodes[msg.node_id]
        if previous is not None and previous.pid != msg.pid:
            self._node_gone(previous, "restarted")
        elif previous is not None:  # the same process again (a retried registration)
            node.used = previous.used
        node.report(msg.occupied)
        log.info(
            "node %s registered: %d slot(s) at %s%s",
            msg.node_id,
            msg.slots,
            msg.data_endpoint,
            f"; {len(node.held)} still occupied" if node.held else "",
        )
        return RegisterReply(
            ok=True,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            heartbeat_timeout_ms=self.config.heartbeat_timeout_ms,
        )

    def _on_heartbeat(self, identity: bytes, msg: Heartbeat) -> HeartbeatAck | None:
        now = self.clock.monotonic_ms()
        if not self.nodes.heartbeat(
            msg.node_id,
            now,
            rss_bytes=msg.rss_bytes,
            wire_errors=msg.wire_errors,
            occupied=msg.occupied,
        ):
            log.warning("heartbeat from unregistered node %s: asking it to register", msg.node_id)
            self._send(identity, Reregister(reason="unknown node (declared lost)"))
            return None
        for job_id, metrics in msg.tasks.items():
            job = self.jobs.get(job_id)
            if job is None or job.done or job.state is JobState.RESTARTING:
                continue
            for m in metrics:
                job.update_metrics(m, now, from_heartbeat=True)
        return HeartbeatAck()

    async def _monitor(self) -> None:
        """Finds lost nodes and overdue cancellations."""
        while True:
            await self.clock.sleep_ms(min(self.config.heartbeat_interval_ms, 500))
            now = self.clock.monotonic_ms()
            for node_id in self.nodes.expired(now, self.config.heartbeat_timeout_ms):
                node = self.nodes.get(node_id)
                if node is not None:
                    self._node_gone(node, f"no heartbeat for {self.config.heartbeat_timeout_ms} ms")
            for job in list(self.jobs.values()):
                if job.state is JobState.CANCELLING and now > job.cancel_deadline_ms:
                    log.warning("job %s: cancellation timed out; marking it CANCELED", job.job_id)
                    self._end(job, JobState.CANCELED)

    async def _ticker(self) -> None:
        """Lets checkpoint managers trigger and expire checkpoints; places jobs waiting for
        slots (oldest first) and restarts jobs when due."""
        while True:
            await self.clock.sleep_ms(20)
            for job in list(self.jobs.values()):
                if job.state is JobState.RUNNING and job.checkpoints is not None:
                    job.checkpoints.tick()
                elif job.state is JobState.SCHEDULING and not job.assignments:
                    self._place(job)
                elif job.state is JobState.RESTARTING:
                    self._restart_when_ready(job)

    def _node_gone(self, node: NodeInfo, why: str, *, left: bool = False) -> None:
        if self.nodes.get(node.node_id) is node:
            self.nodes.remove(node.node_id)
        what = "left the cluster" if left else "lost"
        if left:
            log.info("node %s %s: %s", node.node_id, what, why)
        else:
            log.warning("node %s %s: %s", node.node_id, what, why)
        for job in list(self.jobs.values()):
            if not job.done and node.node_id in job.nodes:
                job.mark_lost(node.node_id)
                self._fail(job, f"node {node.node_id} ({node.host}, pid {node.pid}) {what}: {why}")

    def _on_node_leaving(self, identity: bytes, msg: NodeLeaving) -> Ack:
        node = self.nodes.get(msg.node_id)
        if node is None or node.identity != identity:
            return Ack(detail=f"node {msg.node_id} is not registered")
        if msg.stopped:
            self._node_gone(node, msg.reason, left=True)
            return Ack(detail="left")
        # Its subtasks are still stopping: they count as running until they report, so
        # the next attempt of a job never runs beside them.
        node.leaving = True
        log.info("node %s is leaving: %s", node.node_id, msg.reason)
        for job in list(self.jobs.values()):
            if not job.done and node.node_id in job.nodes:
                self._fail(
                    job,
                    f"node {node.node_id} ({node.host}, pid {node.pid}) left the cluster: "
                    f"{msg.reason}",
                )
        return Ack(detail="leaving")

    # -- jobs -----------------------------------------------------------------------------

    def _on_submit(self, identity: bytes, msg: SubmitJob) -> SubmitReply | ErrorReply | None:
        graph = LogicalGraph.from_dict(msg.graph)
        if not msg.restore_from:
            return self._admit(msg, graph, None, None)
        assert self._tg is not None
        self._tg.start_soon(self._submit_restored, self._request, msg, graph)
        return None  # replied once the restore point is checked

    async def _submit_restored(
        self, request: tuple[bytes, str | None], msg: SubmitJob, graph: LogicalGraph
    ) -> None:
        """Check the restore point off the event loop (it hashes every state file)."""
        assert msg.restore_from is not None
        reply: Any
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
        self._send(request[0], reply, request[1])

    def _admit(
        self,
        msg: SubmitJob,
        graph: LogicalGraph,
        restore: RestoreSpec | None,
        metadata: CheckpointMetadata | None,
    ) -> SubmitReply | ErrorReply:
        """Create, schedule and deploy a submitted job."""
        eg = build_execution_graph(graph)
        try:
            check_co_location(eg)  # no number of slots would make such a job fit
        except SchedulingError as exc:
            return ErrorReply(
                f"cannot schedule job {graph.config.name!r}: {exc}", "bad_co_location"
            )
        first_id = 1
        if restore is not None and metadata is not None:
            source = self.jobs.get(metadata.job_id)
            if source is not None and not source.done:
                # Both would write (and clean up) the same sink transactions.
                return ErrorReply(
                    f"cannot restore: {restore.path} was taken from job {source.job_id} "
                    f"({source.name}), which is still {source.state.value}; stop it first "
                    f"(mesh cancel {source.job_id})",
                    "bad_restore_point",
                )
            first_id = metadata.checkpoint_id + 1
        job = JobRecord(job_id=self.jobs.new_id(), submission=msg, graph=eg, created_ms=self.now())
        job.restore, job.next_checkpoint_id = restore, first_id
        job.restore_path = restore.path if restore is not None else None
        job.restarts = RestartTracker(graph.config.restart)
        base = (
            Path(msg.base_dir) / graph.config.checkpoint_dir
            if graph.config.checkpoint_dir
            else self.config.checkpoint_base
        )
        job.checkpoint_root = str(base / job.job_id)
        self.jobs[job.job_id] = job
        log.info("job %s (%s) submitted", job.job_id, job.name)
        job.transition(JobState.SCHEDULING)
        try:
            self._store_new(job)
        except StateError as exc:
            del self.jobs[job.job_id]
            return ErrorReply(f"job not accepted: {exc}", "coordinator_storage")
        self._place(job)
        return SubmitReply(job_id=job.job_id, waiting=job.waiting)

    def _place(self, job: JobRecord) -> None:
        """Give a SCHEDULING job its slots and deploy it; or let it wait for slots (it
        fails with the scheduler's explanation once ``slot_timeout`` passes)."""
        assignments = self._slots_for(job, "schedule")
        if assignments is None:
            return
        job.assignments = assignments
        self.nodes.allocate(job.job_id, job.attempt, assignments)
        self._deploy(job)

    def _schedule(self, job: JobRecord) -> list[TaskAssignment]:
        return schedule(
            job.graph,
            self.nodes.free_slots(),
            self.nodes.totals(),
            placement=self.config.placement,
        )

    def _deploy(self, job: JobRecord) -> None:
        msg = job.submission
        peers = [self.nodes.nodes[n].address for n in sorted(job.nodes)]
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
            channels=self.config.channels,
            bundle=msg.bundle,
            restore=job.restore,
        )
        for node_id in sorted(job.nodes):
            self._send_to_node(node_id, deploy)

    def _checkpoint_manager(self, job: JobRecord) -> CheckpointManager:
        assert self.store is not None
        eg = job.graph
        logical = eg.logical
        config = self.config
        view = JobView(
            job_id=job.job_id,
            job_name=job.name,
            subtasks=[str(s) for s in eg.subtasks()],
            placement={a.subtask: a.node_id for a in job.assignments},
            nodes=sorted(job.nodes),
            operator_parallelism={
                op.uid: (op.parallelism, op.max_parallelism) for op in logical.operators
            },
            states={k: m.state for k, m in job.metrics.items()},
        )
        manager = CheckpointManager(
            job=view,
            attempt=job.attempt,
            policy=CheckpointPolicy(
                interval_ms=logical.config.checkpoint_interval_ms,
                timeout_ms=config.checkpoint_timeout_ms,
                min_pause_ms=config.checkpoint_min_pause_ms,
                tolerable_failures=config.tolerable_checkpoint_failures,
                retained=config.retained_checkpoints,
            ),
            root=Path(job.checkpoint_root),
            store=self.store,
            clock=self.clock,
            send=self._send_to_node,
            first_id=job.next_checkpoint_id,
        )
        manager.on_too_many_failures = lambda reason: self._fail(job, reason)

        def next_id(n: int) -> None:
            job.next_checkpoint_id = n
            self._persist(job, next_checkpoint_id=n)

        manager.on_next_id = next_id
        return manager

    def _job_for(self, job_id: str, attempt: int, what: str) -> JobRecord | None:
        """The job a node's message is about, if it is of the current attempt.

        Messages of an older attempt (a failed-over one) are dropped and counted.
        """
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.attempt != attempt:
            self.drops.drop(
                "stale_attempt",
                f"{what} for job {job_id} attempt {attempt}; the job is at attempt {job.attempt}",
                expected=True,
            )
            return None
        return job

    def _on_deploy_result(self, identity: bytes, msg: DeployResult) -> None:
        job = self._job_for(msg.job_id, msg.attempt, "deploy result")
        if job is None or job.state is not JobState.SCHEDULING:
            return
        if not msg.ok:
            # The job's code or its files are at fault: restarting would fail the same way.
            self._fail_for_good(job, msg.error or f"deploy failed on node {msg.node_id}")
            return
        job.deploy_pending.discard(msg.node_id)
        if not job.deploy_pending:
            job.transition(JobState.RUNNING)
            job.started_ms = job.started_ms or self.now()
            self._persist(job, state=job.state.value, started_ms=job.started_ms)
            job.checkpoints = self._checkpoint_manager(job)
            for node_id in sorted(job.nodes):
                self._send_to_node(node_id, StartTasks(job_id=job.job_id, attempt=job.attempt))
            log.info("job %s (%s) running on %d node(s)", job.job_id, job.name, len(job.nodes))

    def _on_task_update(self, identity: bytes, msg: TaskUpdate) -> None:
        job = self._job_for(msg.job_id, msg.attempt, "task update")
        if job is None:
            return
        job.update_metrics(msg.metrics, self.clock.monotonic_ms(), from_heartbeat=False)
        if job.done or job.state is JobState.RESTARTING:
            return
        state = msg.metrics.state
        if job.checkpoints is not None:
            job.checkpoints.on_subtask_state(msg.metrics.subtask, state)
        if state == "FAILED":
            self._fail(job, msg.error or f"subtask {msg.metrics.subtask} failed")
        elif state == "CANCELED" and job.state in (JobState.RUNNING, JobState.SCHEDULING):
            # Nobody asked: its node stopped it (it lost the coordinator for too long).
            self._fail(
                job,
                f"subtask {msg.metrics.subtask} was stopped by node {msg.node_id}"
                + (f": {msg.error}" if msg.error else ""),
            )
        elif job.state is JobState.RUNNING and job.all_subtasks(frozenset({"FINISHED"})):
            self._end(job, JobState.FINISHED)
        elif (
            job.state is JobState.RUNNING
            and not job.final_commit_sent
            and job.all_subtasks(frozenset({"FINISHED", "ENDING"}))
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
            self._end(job, JobState.CANCELED)

    def _commit_final(self, job: JobRecord) -> None:
        if job.state is not JobState.RUNNING:
            return
        for node_id in sorted(job.nodes):
            self._send_to_node(node_id, CommitFinal(job_id=job.job_id, attempt=job.attempt))

    def _on_collect(self, identity: bytes, msg: CollectBatch) -> None:
        job = self._job_for(msg.job_id, msg.attempt, "collected records")
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

    def _cancel_tasks(self, job: JobRecord, reason: str) -> None:
        # A person's cancel of a job without checkpoints keeps what its sinks wrote; with
        # checkpoints only checkpointed output is ever visible, and a failure keeps
        # nothing uncommitted.
        commit = reason == "user" and job.graph.logical.config.checkpoint_interval_ms is None
        cancel = CancelTasks(job_id=job.job_id, attempt=job.attempt, reason=reason, commit=commit)
        for node_id in sorted(job.nodes):
            if self.nodes.get(node_id) is not None:
                self._send_to_node(node_id, cancel)

    def _fail(self, job: JobRecord, error: str) -> None:
        """The current attempt failed: fail over if the restart strategy allows."""
        if job.done or job.state is JobState.RESTARTING:
            return  # the failed attempt is being cancelled anyway
        if job.state is JobState.CANCELLING:
            self._fail_for_good(job, error)
            return
        job.record_failure(error, self.now())
        delay = job.restarts.on_failure(self.clock.monotonic_ms())
        if delay is None:
            cause = job.restarts.gave_up()
            if job.restarts.kind == "none":
                self._fail_for_good(job, error)
            else:
                self._fail_for_good(job, f"{cause}; the last failure:\n{error}")
            return
        self._restart(job, error, delay)

    def _fail_for_good(self, job: JobRecord, error: str) -> None:
        if job.done:
            return
        log.error("job %s (%s) failed: %s", job.job_id, job.name, error)
        job.error = error
        self._cancel_tasks(job, "failure")
        self._end(job, JobState.FAILED)

    def _end(self, job: JobRecord, state: JobState) -> None:
        try:
            job.transition(state)
        except IllegalTransition:
            log.exception("job %s", job.job_id)
            return
        job.ended_ms = self.now()
        job.waiting = None
        if job.checkpoints is not None:
            # Stopped, it triggers nothing more; it stays for the status summary.
            job.checkpoints.shutdown(_ENDED_AS[state])
        self.nodes.release(job.job_id)
        # The code bundle is only needed to deploy; a finished job keeps its summary.
        job.submission = dataclasses.replace(job.submission, bundle=b"")
        if state is not JobState.FAILED:
            log.info("job %s (%s) %s", job.job_id, job.name, state.value)
        self._persist(job, state=state.value, ended_ms=job.ended_ms, error=job.error)
        if self.job_store is not None:
            try:
                self.job_store.drop_bundle(job.job_id)
                for job_id in self.jobs.forget_ended(keep=self.config.retained_jobs):
                    self.job_store.forget(job_id)
            except StateError as exc:
                log.error("job %s: %s", job.job_id, exc)

    # -- client requests --------------------------------------------------------------------

    def _on_list_jobs(self, identity: bytes, msg: ListJobs) -> JobList:
        now = self.now()
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_ms)
        return JobList(jobs=[j.summary(now) for j in jobs])

    def _on_status(self, identity: bytes, msg: GetJobStatus) -> JobStatusReply:
        return JobStatusReply(status=self.jobs.find(msg.job_id).status(self.now()))

    def _on_cancel(self, identity: bytes, msg: CancelJob) -> Ack:
        job = self.jobs.find(msg.job_id)
        if job.done:
            return Ack(detail=f"job {job.job_id} is already {job.state.value}")
        if job.state is JobState.CANCELLING:
            return Ack(detail="already cancelling")
        self._cancel(job, "user")
        return Ack(detail="cancelling")

    def _cancel(self, job: JobRecord, reason: str) -> None:
        if job.state is JobState.RESTARTING and (job.subtasks_done() or not job.nodes):
            self._end(job, JobState.CANCELED)
            log.info("job %s (%s) cancelled while restarting", job.job_id, job.name)
            return
        job.transition(JobState.CANCELLING)
        self._persist(job, state=job.state.value)
        if job.checkpoints is not None:
            job.checkpoints.shutdown("cancelling")
        job.cancel_deadline_ms = self.clock.monotonic_ms() + self.config.cancel_timeout_ms
        self._cancel_tasks(job, reason)
        if job.subtasks_done() or not job.nodes:
            self._end(job, JobState.CANCELED)
        log.info("job %s (%s) cancelling (%s)", job.job_id, job.name, reason)

    def _on_fetch(self, identity: bytes, msg: FetchCollected) -> CollectedReply:
        job = self.jobs.find(msg.job_id)
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

    def _on_ack_checkpoint(self, identity: bytes, msg: AckCheckpoint) -> None:
        job = self._job_for(msg.job_id, msg.attempt, f"ack of checkpoint {msg.checkpoint_id}")
        if job is not None and job.checkpoints is not None:
            job.checkpoints.on_ack(msg)

    def _on_decline_checkpoint(self, identity: bytes, msg: DeclineCheckpoint) -> None:
        job = self._job_for(msg.job_id, msg.attempt, f"decline of checkpoint {msg.checkpoint_id}")
        if job is not None and job.checkpoints is not None:
            job.checkpoints.on_decline(msg)

    def _on_take_savepoint(self, identity: bytes, msg: TakeSavepoint) -> ErrorReply | None:
        job = self.jobs.find(msg.job_id)
        if job.state is not JobState.RUNNING or job.checkpoints is None:
            return ErrorReply(
                f"job {job.job_id} is {job.state.value}: only a running job takes savepoints",
                "not_running",
            )
        client, rid = self._request
        directory = (
            Path(msg.directory)
            if msg.directory
            else Path(job.checkpoint_root).parent / "savepoints"
        )

        def done(path: str | None, checkpoint_id: int, error: str | None) -> None:
            if path is None:
                self._send(
                    client, ErrorReply(f"savepoint failed: {error}", "savepoint_failed"), rid
                )
                return
            self._send(client, SavepointTaken(path=path, checkpoint_id=checkpoint_id), rid)
            if msg.cancel and job.state is JobState.RUNNING:
                self._cancel(job, "savepoint")

        job.checkpoints.take_savepoint(SavepointRequest(directory=directory, done=done))
        return None

    def _on_list_checkpoints(self, identity: bytes, msg: ListCheckpoints) -> CheckpointList:
        job = self.jobs.find(msg.job_id)
        assert self.store is not None
        return CheckpointList(checkpoints=[r.to_dict() for r in self.store.history(job.job_id)])

    def _on_list_nodes(self, identity: bytes, msg: ListNodes) -> NodeList:
        now = self.clock.monotonic_ms()
        return NodeList(nodes=[n.summary(now) for n in self.nodes.nodes.values()])

    _handlers: dict[type[Any], Any] = {
        RegisterNode: _on_register,
        Heartbeat: _on_heartbeat,
        DeployResult: _on_deploy_result,
        TaskUpdate: _on_task_update,
        CollectBatch: _on_collect,
        SubmitJob: _on_submit,
        ListJobs: _on_list_jobs,
        GetJobStatus: _on_status,
        CancelJob: _on_cancel,
        FetchCollected: _on_fetch,
        ListNodes: _on_list_nodes,
        NodeLeaving: _on_node_leaving,
        AckCheckpoint: _on_ack_checkpoint,
        DeclineCheckpoint: _on_decline_checkpoint,
        TakeSavepoint: _on_take_savepoint,
        ListCheckpoints: _on_list_checkpoints,
    }
