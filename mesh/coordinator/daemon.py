"""The coordinator daemon (Flink's JobManager): owns the socket, the clock's loops and
the handler table; the work is done by its collaborators.

One ROUTER socket serves nodes and clients. Each message is decoded and handed to the
collaborator that owns its concept, and handled to completion on the event loop;
nothing is awaited in between except sends, so the registries are never seen
half-updated:

* ``membership.NodeMembership`` — register, heartbeat, leaving; lost nodes;
* ``admission.JobAdmission`` — submitted jobs (and the restore point they start from);
* ``lifecycle.JobLifecycle`` — deploy results, task updates, checkpoint acks, collected
  records; failing, cancelling and ending jobs; with ``deploy.Deployer`` (the messages)
  and ``failover.JobFailover`` (restarts and resumption);
* ``requests.ClientRequests`` — list, status, cancel, fetch, savepoints, nodes.

Jobs live in the coordinator's database too (``journal.JobJournal``): a coordinator that
restarts resumes every job that had not ended, as a new attempt from its latest
completed checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.abc

from mesh.coordinator.admission import JobAdmission
from mesh.coordinator.alignment import WatermarkAligner
from mesh.coordinator.background import BackgroundTasks
from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.instruments import coordinator_instruments
from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.jobstore import JobStore
from mesh.coordinator.journal import JobJournal
from mesh.coordinator.lifecycle import JobLifecycle
from mesh.coordinator.membership import NodeMembership
from mesh.coordinator.outbound import Caller, ControlOut
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.requests import ClientRequests
from mesh.coordinator.store import CheckpointStore
from mesh.coordinator.web.history import HISTORY_INTERVAL_MS, JobHistory
from mesh.coordinator.web.peek import PeekHub
from mesh.coordinator.web.settings import bind_http
from mesh.errors import FrameError, MeshError
from mesh.protocol import codec
from mesh.protocol.messages import (
    AckCheckpoint,
    AwaitJobEnd,
    CancelJob,
    CollectBatch,
    DeclineCheckpoint,
    DeployResult,
    ErrorReply,
    FetchCollected,
    GetJobStatus,
    Heartbeat,
    ListCheckpoints,
    ListJobs,
    ListNodes,
    NodeLeaving,
    PeekSamples,
    RegisterNode,
    SourceWatermark,
    SubmitJob,
    TakeSavepoint,
    TaskUpdate,
)
from mesh.protocol.states import JobState
from mesh.state.lock import StateDirLock
from mesh.telemetry.instruments import register
from mesh.time.clock import Clock, SystemClock
from mesh.transport.curve import security_note
from mesh.transport.drops import DropCounter
from mesh.transport.inbound import InboundConnections
from mesh.transport.sockets import Frame, Outbox, SocketFactory, SocketKind

__all__ = ["Coordinator", "CoordinatorConfig"]

log = logging.getLogger("mesh.coordinator")

M = TypeVar("M")

# How often the lifecycle's clock-driven work runs (checkpoint triggers, waiting jobs,
# restarts).
_TICK_MS = 20


def _import_web_stack() -> None:
    """Import what serving HTTP needs (0.15-0.2 s; run in a thread)."""
    importlib.import_module("mesh.coordinator.web.app")
    importlib.import_module("mesh.coordinator.web.server")


class HandlerTable:
    """Which function handles each message type. ``add`` checks, for the type checker,
    that the handler takes that type; the reply (if not None) goes back to the caller."""

    def __init__(self) -> None:
        self._table: dict[type[Any], Callable[[Caller, Any], object]] = {}

    def add(self, kind: type[M], handler: Callable[[Caller, M], object]) -> None:
        """Let ``handler`` answer messages of type ``kind``."""
        if kind in self._table:
            raise ValueError(f"{kind.__name__} has a handler already")
        self._table[kind] = handler

    def get(self, kind: type[Any]) -> Callable[[Caller, Any], object] | None:
        """The handler of ``kind``, if any."""
        return self._table.get(kind)


def _no_reply(handler: Callable[[M], None]) -> Callable[[Caller, M], None]:
    """A handler of a node's report, which is answered by nothing."""
    return lambda caller, msg: handler(msg)


@dataclass(frozen=True, slots=True)
class _Parts:
    """The collaborators, built once the databases are open."""

    membership: NodeMembership
    lifecycle: JobLifecycle
    handlers: HandlerTable
    requests: ClientRequests
    peek: PeekHub
    history: JobHistory


class Coordinator:
    """A coordinator daemon."""

    def __init__(self, config: CoordinatorConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.nodes = NodeRegistry()
        self.jobs = JobTable()
        self.endpoint: str | None = None
        self.http_url: str | None = None  # the dashboard, once served
        self.drops = DropCounter(log)
        self._out = ControlOut(self.nodes)
        self._background = BackgroundTasks()
        register("mesh.coordinator", coordinator_instruments(self.jobs, self.clock))

    def _build(self, store: CheckpointStore, job_store: JobStore) -> _Parts:
        config, clock, nodes, jobs, out = self.config, self.clock, self.nodes, self.jobs, self._out
        journal = JobJournal(job_store, jobs)
        lifecycle = JobLifecycle(
            config=config,
            clock=clock,
            nodes=nodes,
            jobs=jobs,
            out=out,
            journal=journal,
            store=store,
            background=self._background,
            drops=self.drops,
        )
        membership = NodeMembership(
            config=config, clock=clock, nodes=nodes, jobs=jobs, out=out, lifecycle=lifecycle
        )
        admission = JobAdmission(
            config=config,
            clock=clock,
            jobs=jobs,
            out=out,
            journal=journal,
            lifecycle=lifecycle,
            background=self._background,
        )
        requests = ClientRequests(
            clock=clock, nodes=nodes, jobs=jobs, store=store, out=out, lifecycle=lifecycle
        )
        aligner = WatermarkAligner(jobs, out)
        peek = PeekHub(jobs=jobs, out=out, drops=self.drops)

        def job_ended(job: JobRecord) -> None:
            requests.job_ended(job)
            aligner.job_ended(job)

        lifecycle.on_end = job_ended
        h = HandlerTable()
        # node → coordinator
        h.add(RegisterNode, membership.on_register)
        h.add(Heartbeat, membership.on_heartbeat)
        h.add(NodeLeaving, membership.on_node_leaving)
        h.add(DeployResult, _no_reply(lifecycle.on_deploy_result))
        h.add(TaskUpdate, _no_reply(lifecycle.on_task_update))
        h.add(CollectBatch, _no_reply(lifecycle.on_collect))
        h.add(AckCheckpoint, _no_reply(lifecycle.on_ack_checkpoint))
        h.add(DeclineCheckpoint, _no_reply(lifecycle.on_decline_checkpoint))
        h.add(SourceWatermark, _no_reply(aligner.on_source_watermark))
        h.add(
            PeekSamples,
            _no_reply(lambda msg: peek.on_samples(msg, clock.monotonic_ms(), clock.now_ms())),
        )
        # client → coordinator
        h.add(SubmitJob, admission.on_submit)
        h.add(ListJobs, requests.on_list_jobs)
        h.add(GetJobStatus, requests.on_status)
        h.add(AwaitJobEnd, requests.on_await_end)
        h.add(CancelJob, requests.on_cancel)
        h.add(FetchCollected, requests.on_fetch)
        h.add(TakeSavepoint, requests.on_take_savepoint)
        h.add(ListCheckpoints, requests.on_list_checkpoints)
        h.add(ListNodes, requests.on_list_nodes)
        lifecycle.failover.resume()
        return _Parts(
            membership=membership,
            lifecycle=lifecycle,
            handlers=h,
            requests=requests,
            peek=peek,
            history=JobHistory(),
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status.started(endpoint)`` once bound."""
        with contextlib.ExitStack() as databases:
            # Held for the daemon's lifetime: one coordinator per state directory.
            databases.enter_context(StateDirLock.acquire(self.config.state_dir, "coordinator"))
            store = CheckpointStore(self.config.state_dir / "coordinator.db")
            databases.callback(store.close)
            job_store = JobStore(self.config.state_dir / "coordinator.db")
            databases.callback(job_store.close)
            parts = self._build(store, job_store)
            with SocketFactory(curve=self.config.curve) as factory:
                router = factory.bind(
                    SocketKind.ROUTER,
                    self.config.bind,
                    max_message_bytes=self.config.max_message_bytes,
                )
                self.endpoint = router.endpoint
                # Who is connected: names senders, cuts the ones sending garbage.
                peers = InboundConnections(
                    router,
                    "control port",
                    limit=self.config.max_bad_messages,
                    size_limit=("max_message_size", self.config.max_message_bytes),
                    on_oversize=lambda peer: self.drops.drop(
                        "oversize", f"a message part over max_message_size from {peer}"
                    ),
                )
                outbox = Outbox(router)
                self._out.attach(outbox)
                async with anyio.create_task_group() as tg:
                    self._background.attach(tg)
                    tg.start_soon(outbox.pump)
                    tg.start_soon(self._monitor, parts)
                    tg.start_soon(self._ticker, parts)
                    tg.start_soon(peers.watch)
                    if self.config.http is not None:
                        # Bound now, served once the web stack is imported (in a
                        # thread, so the coordinator is ready without waiting for it).
                        http_socket, self.http_url = bind_http(self.config.http)
                        tg.start_soon(self._serve_http, store, parts, http_socket)
                        tg.start_soon(self._sample_history, parts)
                    log.info(
                        "coordinator listening on %s (%s)",
                        router.endpoint,
                        security_note(self.config.curve),
                    )
                    task_status.started(router.endpoint)
                    while True:
                        frames = router.recv_frames_nowait()
                        if frames is None:
                            await router.wait_readable()
                            continue
                        try:
                            self._on_frames(parts.handlers, frames, peers)
                        except Exception:  # a bug must not take the cluster down
                            log.exception("error while handling a message")
                        await anyio.lowlevel.checkpoint()

    def _on_frames(
        self, handlers: HandlerTable, frames: list[Frame], peers: InboundConnections
    ) -> None:
        identity, body = frames[0].bytes, [frame.bytes for frame in frames[1:]]
        try:
            envelope = codec.decode(body)
        except FrameError as exc:
            detail = (
                f"{exc} (from {identity.decode('utf-8', 'replace')!r} "
                f"at {peers.peer_of(frames[-1])})"
            )
            self.drops.drop("malformed", detail)
            peers.strike(frames[-1], detail)
            return
        msg, caller = envelope.message, Caller(identity, envelope.rid)
        handler = handlers.get(type(msg))
        if handler is None:
            self._out.reply(caller, ErrorReply(f"unexpected message {msg.TYPE}", "bad_request"))
            return
        try:
            reply = handler(caller, msg)
        except MeshError as exc:
            reply = ErrorReply(str(exc), type(exc).__name__)
        if reply is not None:
            self._out.reply(caller, reply)

    async def _monitor(self, parts: _Parts) -> None:
        """Finds lost nodes and overdue cancellations."""
        while True:
            await self.clock.sleep_ms(min(self.config.heartbeat_interval_ms, 500))
            now = self.clock.monotonic_ms()
            parts.membership.expire(now)
            parts.lifecycle.expire_cancellations(now)

    async def _serve_http(
        self, store: CheckpointStore, parts: _Parts, http_socket: socket.socket
    ) -> None:
        """The dashboard and REST API on ``http_socket`` (the web stack is imported only
        when served); the socket is closed when it ends, served or not."""
        with http_socket:
            await anyio.to_thread.run_sync(_import_web_stack)
            await self._serve_dashboard(store, parts, http_socket)

    async def _serve_dashboard(
        self, store: CheckpointStore, parts: _Parts, http_socket: socket.socket
    ) -> None:
        from mesh.coordinator.web.app import Dashboard, build_app
        from mesh.coordinator.web.server import HttpServer
        from mesh.transport.exposure import is_loopback

        assert self.config.http is not None and self.http_url is not None
        lifecycle = parts.lifecycle

        def cancel(job: JobRecord) -> str:
            if job.state is JobState.CANCELLING:
                return "already cancelling"
            lifecycle.cancel(job, "user")
            return "cancelling"

        dashboard = Dashboard(
            clock=self.clock,
            jobs=self.jobs,
            nodes=self.nodes,
            store=store,
            requests=parts.requests,
            cancel=cancel,
            history=parts.history,
            peek=parts.peek,
            endpoint=lambda: self.endpoint,
            token=self.config.http_token,
            jaeger_url=self.config.jaeger_url,
        )
        app = build_app(dashboard, loopback=is_loopback(self.config.http.host))
        await HttpServer(app, self.config.http, http_socket, self.http_url).run()

    async def _sample_history(self, parts: _Parts) -> None:
        """A point of every job's throughput a second; peeks nobody renews end."""
        while True:
            await self.clock.sleep_ms(HISTORY_INTERVAL_MS)
            parts.history.sample(list(self.jobs.values()), self.clock.now_ms())
            parts.peek.expire(self.clock.monotonic_ms())

    async def _ticker(self, parts: _Parts) -> None:
        """Drives the lifecycle's clock-driven work."""
        while True:
            await self.clock.sleep_ms(_TICK_MS)
            parts.lifecycle.tick()
