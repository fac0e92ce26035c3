"""The node daemon (Flink's TaskManager): offers slots, runs the subtasks deployed to it.

Lifecycle: ``Node.run`` binds the data and credit sockets, connects to the coordinator,
registers (retrying until the coordinator answers), then reports ready through
``task_status`` and heartbeats until it is cancelled. Everything it starts lives in its
task group; cancelling ``run`` stops every job and closes every socket. A graceful stop
(SIGTERM) calls ``leave`` first: the coordinator hears the node is going and fails its
jobs over at once, then the node stops its subtasks without committing.

Slots: the node tells the coordinator which slots its subtasks occupy, on registration
and with every heartbeat (and at once when a job's subtasks have all ended), so a
coordinator that restarted, or one whose cancel timed out, never hands out a slot
that is still busy.

Fencing: the coordinator answers every heartbeat. A node that hears nothing from it for
the heartbeat timeout stops its subtasks (without committing anything) and keeps trying
to reach it; by then the coordinator has declared the node lost and restarted its jobs
elsewhere, so two attempts of a job never commit side by side. A coordinator that does
not know the node (it restarted, or declared the node lost) asks it to register again.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from mesh._version import __version__
from mesh.errors import MeshError, TransportError
from mesh.node.dataplane.network import NodeNetwork
from mesh.node.instruments import node_instruments
from mesh.protocol import codec
from mesh.protocol.messages import (
    CancelTasks,
    CheckpointDone,
    CommitFinal,
    DeployResult,
    DeployTasks,
    Heartbeat,
    HeartbeatAck,
    NodeLeaving,
    PeekTask,
    PeerAddress,
    RegisterNode,
    RegisterReply,
    Reregister,
    SlotInUse,
    StartTasks,
    SubtaskMetrics,
    TriggerCheckpoint,
    WatermarkBound,
)
from mesh.state.lock import StateDirLock
from mesh.telemetry.instruments import register
from mesh.time.clock import Clock, SystemClock
from mesh.transport.barriers import BarrierPayload
from mesh.transport.control import ControlConnection
from mesh.transport.curve import Curve, security_note
from mesh.transport.handshake import HandshakeFailed, wait_handshake
from mesh.transport.sockets import Socket, SocketFactory, SocketKind

if TYPE_CHECKING:
    from mesh.node.runtime.job import JobRuntime

__all__ = ["Node", "NodeConfig"]

log = logging.getLogger("mesh.node")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Settings of a node daemon."""

    coordinator: str
    slots: int = 1
    state_dir: Path = Path(".mesh/node")
    bind_host: str = "127.0.0.1"
    advertise_host: str | None = None  # how peers reach us; defaults to bind_host
    node_id: str | None = None
    register_timeout_s: float = 2.0
    # The largest data frame part accepted from a peer (ZeroMQ MAXMSGSIZE).
    max_frame_bytes: int = 64 << 20
    # A connection sending this many malformed or forged messages is cut (0: never).
    max_bad_messages: int = 100
    curve: Curve | None = None  # CURVE keys: every socket authenticated and encrypted


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Node:
    """A node daemon."""

    def __init__(self, config: NodeConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.jobs: dict[str, JobRuntime] = {}
        register("mesh.node", node_instruments(self.node_id, self.jobs, self.clock))
        # Started runtimes until their subtasks have all ended (also once stopped and
        # dropped from ``jobs``): their slots are still occupied.
        self._running: set[JobRuntime] = set()
        self._leaving = False  # leave() was called: no new subtasks, no registering
        self._left = False  # leave() is done: no more heartbeats
        self._drained: anyio.Event | None = None  # set when _running empties (leaving)
        self.address: PeerAddress | None = None
        self.heartbeat_interval_ms = 1000
        self.heartbeat_timeout_ms = 5000
        self._last_contact_ms = 0.0  # monotonic: the last message from the coordinator
        self._control: ControlConnection | None = None
        self._network: NodeNetwork | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._sockets: SocketFactory | None = None
        self._registering = False  # a registration request is under way

    @property
    def registering(self) -> bool:
        """Whether a registration is under way (the coordinator has not answered yet)."""
        return self._registering

    def busy_slots(self) -> int:
        """How many of this node's slots its subtasks occupy."""
        return len({use.slot for use in self._occupied()})

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[PeerAddress] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status.started`` once registered."""
        config = self.config
        # Held for the daemon's lifetime: one node per state directory.
        with (
            StateDirLock.acquire(config.state_dir, "node"),
            SocketFactory(curve=config.curve) as factory,
        ):
            self._sockets = factory
            network = NodeNetwork(
                factory,
                self.node_id,
                config.bind_host,
                max_frame_bytes=config.max_frame_bytes,
                max_bad_messages=config.max_bad_messages,
            )
            self._network = network
            network.on_job_link_lost = self._job_link_lost
            self.address = network.advertise(config.advertise_host or config.bind_host)
            dealer = factory.connect(
                SocketKind.DEALER,
                config.coordinator,
                identity=self.node_id,
                server=("coordinator",),
                watch_handshake=config.curve is not None,
            )
            self._control = ControlConnection(dealer, peer=f"coordinator {config.coordinator}")
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(network.run)
                    if dealer.monitor is not None:
                        tg.start_soon(self._watch_handshake, dealer)
                    await tg.start(self._control.serve, self._on_message)
                    await self._register()
                    tg.start_soon(self._heartbeats)
                    log.info(
                        "node %s ready: %d slot(s), data %s, credits %s (%s)",
                        self.node_id,
                        config.slots,
                        self.address.data_endpoint,
                        self.address.control_endpoint,
                        security_note(config.curve),
                    )
                    task_status.started(self.address)
            finally:
                for runtime in list(self.jobs.values()):
                    runtime.dispose()
                network.close()

    async def _watch_handshake(self, dealer: Socket) -> None:
        """Say why the coordinator does not answer when it refuses our key (once)."""
        try:
            await wait_handshake(
                dealer,
                f"the coordinator at {self.config.coordinator}",
                timeout_s=self.config.register_timeout_s * 5,
                me="node",
            )
        except HandshakeFailed as exc:
            log.error("node %s cannot register: %s", self.node_id, exc)

    def _job_link_lost(self, job_id: str, attempt: int, reason: str, back: bool) -> None:
        """A link to a node this job attempt exchanges frames with dropped, or came back
        after a drop: frames on it may be lost, so the attempt cannot go on. Back: its
        subtasks here fail now. Dropped: if that node died, the coordinator notices within
        its heartbeat timeout and restarts the job itself (saying the node was lost); if
        it still runs (the network between us is cut), nobody else will notice: after
        that long, the attempt's subtasks here fail."""
        runtime = self.jobs.get(job_id)
        if back:
            if runtime is not None and runtime.attempt == attempt:
                runtime.fail_running(TransportError(reason))
        elif self._tg is not None:
            self._tg.start_soon(self._fail_if_still_running, job_id, attempt, reason)

    async def _fail_if_still_running(self, job_id: str, attempt: int, reason: str) -> None:
        await self.clock.sleep_ms(self.heartbeat_timeout_ms + 2 * self.heartbeat_interval_ms)
        runtime = self.jobs.get(job_id)
        if runtime is not None and runtime.attempt == attempt:
            runtime.fail_running(TransportError(reason))

    async def _register(self) -> None:
        assert self._control is not None and self.address is not None
        message = RegisterNode(
            node_id=self.node_id,
            slots=self.config.slots,
            data_endpoint=self.address.data_endpoint,
            control_endpoint=self.address.control_endpoint,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            occupied=self._occupied(),
        )
        waited = False
        self._registering = True
        try:
            while True:
                try:
                    reply = await self._control.request(
                        message, timeout_s=self.config.register_timeout_s
                    )
                except TimeoutError:
                    if not waited:
                        log.warning(
                            "waiting for the coordinator at %s ...", self.config.coordinator
                        )
                        waited = True
                    continue
                if not isinstance(reply, RegisterReply) or not reply.ok:
                    error = getattr(reply, "error", None) or f"unexpected {type(reply).__name__}"
                    raise MeshError(f"coordinator refused node {self.node_id}: {error}")
                self.heartbeat_interval_ms = reply.heartbeat_interval_ms
                self.heartbeat_timeout_ms = reply.heartbeat_timeout_ms
                self._last_contact_ms = self.clock.monotonic_ms()
                break
        finally:
            self._registering = False
        if self._occupied() != message.occupied:  # slots were freed while registering
            self._slots_changed()

    def _reregister(self, reason: str) -> None:
        if self._registering or self._tg is None or self._leaving:
            return
        log.warning("the coordinator asks node %s to register again: %s", self.node_id, reason)
        # Our jobs were failed when we were declared lost: drop what is left of them.
        self._stop_jobs(f"the coordinator asked node {self.node_id} to register again")
        self._tg.start_soon(self._register)

    def _stop_jobs(self, why: str) -> None:
        """Stop every subtask without committing (their job goes on elsewhere)."""
        for runtime in list(self.jobs.values()):
            log.warning("stopping job %s attempt %d: %s", runtime.job_id, runtime.attempt, why)
            runtime.cancel(commit=False, reason=why)
        self.jobs.clear()

    def _occupied(self) -> list[SlotInUse]:
        """The slots this node's subtasks occupy: deployed jobs, and stopped ones whose
        subtasks are still ending."""
        runtimes = {*self.jobs.values(), *self._running}
        return sorted(
            {
                SlotInUse(slot=a.slot, job_id=r.job_id, attempt=r.attempt)
                for r in runtimes
                for a in r.deploy.assignments
                if a.node_id == self.node_id
            },
            key=lambda u: (u.slot, u.job_id, u.attempt),
        )

    def _heartbeat(self) -> Heartbeat:
        assert self._network is not None
        tasks: dict[str, list[SubtaskMetrics]] = {
            job_id: runtime.metrics() for job_id, runtime in self.jobs.items()
        }
        return Heartbeat(
            node_id=self.node_id,
            tasks=tasks,
            rss_bytes=_rss_bytes(),
            wire_errors=self._network.drops.total,
            occupied=self._occupied(),
        )

    async def _heartbeats(self) -> None:
        assert self._control is not None
        while not self._left:
            await self.clock.sleep_ms(self.heartbeat_interval_ms)
            silent = self.clock.monotonic_ms() - self._last_contact_ms
            if silent > self.heartbeat_timeout_ms and self.jobs and not self._registering:
                self._stop_jobs(
                    f"no word from the coordinator at {self.config.coordinator} for "
                    f"{silent:.0f} ms (timeout {self.heartbeat_timeout_ms} ms)"
                )
            if not self._left:
                await self._control.send(self._heartbeat())

    async def leave(self, reason: str = "stopped (SIGTERM)", *, timeout_s: float = 2.0) -> None:
        """Leave the cluster gracefully: tell the coordinator (its jobs fail over now, from
        their latest checkpoint), stop every subtask without committing, wait for them to
        end, then say so. Cancel ``run`` afterwards."""
        if self._leaving or self._control is None or self._registering:
            return
        self._leaving = True
        log.info("node %s leaving the cluster: %s", self.node_id, reason)
        await self._tell_leaving(reason, stopped=False, timeout_s=timeout_s)
        self._stop_jobs(f"node {self.node_id} is leaving: {reason}")
        self._drained = anyio.Event()
        if self._running:
            await self._drained.wait()
        self._left = True
        await self._tell_leaving(reason, stopped=True, timeout_s=timeout_s)

    async def _tell_leaving(self, reason: str, *, stopped: bool, timeout_s: float) -> None:
        assert self._control is not None
        message = NodeLeaving(node_id=self.node_id, reason=reason, stopped=stopped)
        try:
            await self._control.request(message, timeout_s=timeout_s)
        except (TimeoutError, MeshError) as exc:
            log.warning(
                "the coordinator did not take node %s's leave (%s); leaving anyway",
                self.node_id,
                exc or "no answer",
            )

    # -- messages from the coordinator --------------------------------------------------------

    async def _on_message(self, envelope: codec.Envelope) -> None:
        msg = envelope.message
        self._last_contact_ms = self.clock.monotonic_ms()
        if isinstance(msg, HeartbeatAck):
            return
        if log.isEnabledFor(logging.DEBUG) and not isinstance(msg, DeployTasks):
            log.debug("from the coordinator: %s", msg)
        if self._leaving and isinstance(msg, (DeployTasks, StartTasks)):
            log.warning("node %s is leaving: ignored %s", self.node_id, type(msg).__name__)
        elif isinstance(msg, DeployTasks):
            await self._deploy(msg)
        elif isinstance(msg, StartTasks):
            self._start(msg)
        elif isinstance(msg, Reregister):
            self._reregister(msg.reason)
        elif isinstance(msg, CancelTasks):
            runtime = self._runtime(msg.job_id, msg.attempt)
            if runtime is not None:
                log.info("cancelling job %s (%s)", msg.job_id, msg.reason or "requested")
                runtime.cancel(commit=msg.commit)
                if not runtime.started:
                    del self.jobs[msg.job_id]
                    self._slots_changed()
        elif isinstance(msg, TriggerCheckpoint):
            runtime = self._runtime(msg.job_id, msg.attempt)
            if runtime is not None:
                barrier = BarrierPayload(kind=msg.kind, directory=msg.directory, trace=msg.trace)
                runtime.trigger_checkpoint(msg.checkpoint_id, barrier, msg.subtasks)
        elif isinstance(msg, WatermarkBound):
            runtime = self._runtime(msg.job_id, msg.attempt)
            if runtime is not None:
                runtime.watermark_bound(msg.group, msg.bound)
        elif isinstance(msg, CheckpointDone):
            runtime = self._runtime(msg.job_id, msg.attempt)
            if runtime is not None and msg.completed:
                runtime.checkpoint_completed(msg.checkpoint_id, msg.trace)
        elif isinstance(msg, PeekTask):
            # Not _runtime(): a peek at an attempt that ended is routine (the dashboard
            # asks until it hears of the restart), not a dropped message.
            runtime = self.jobs.get(msg.job_id)
            if runtime is not None and runtime.attempt == msg.attempt:
                runtime.peek(msg)
            else:
                log.debug("peek at job %s attempt %d: not running here", msg.job_id, msg.attempt)
        elif isinstance(msg, CommitFinal):
            runtime = self._runtime(msg.job_id, msg.attempt)
            if runtime is not None:
                runtime.commit_final()
        else:
            log.warning("unexpected %s from the coordinator", type(msg).__name__)

    def _runtime(self, job_id: str, attempt: int) -> JobRuntime | None:
        """The runtime of this job attempt; a message for another attempt is counted."""
        runtime = self.jobs.get(job_id)
        if runtime is not None and runtime.attempt == attempt:
            return runtime
        assert self._network is not None
        self._network.drops.drop(
            "stale_attempt",
            f"coordinator message for job {job_id} attempt {attempt}: "
            + (f"running attempt {runtime.attempt}" if runtime else "not running here"),
            expected=True,
        )
        return None

    def _work_dir(self, job_id: str, attempt: int) -> Path:
        return self.config.state_dir / "jobs" / f"{job_id}-{attempt}"

    async def _deploy(self, deploy: DeployTasks) -> None:
        control = self._control
        assert control is not None and self._network is not None
        old = self.jobs.pop(deploy.job_id, None)
        if old is not None:
            old.cancel(commit=False)

        # Imported on the first deploy: an idle node does without the job runtime (about a
        # third of its memory and start-up).
        from mesh.node.runtime.job import JobRuntime

        runtime = JobRuntime(
            deploy,
            node_id=self.node_id,
            network=self._network,
            work_dir=self._work_dir(deploy.job_id, deploy.attempt),
            clock=self.clock,
            send=control.send_nowait,
            sockets=self._sockets,
        )
        try:
            runtime.prepare()
        except Exception as exc:
            log.error("deploy of job %s failed: %s", deploy.job_id, exc)
            await control.send(
                DeployResult(
                    job_id=deploy.job_id,
                    attempt=deploy.attempt,
                    node_id=self.node_id,
                    ok=False,
                    error=f"node {self.node_id}: {exc}",
                )
            )
            return
        self.jobs[deploy.job_id] = runtime
        await control.send(
            DeployResult(
                job_id=deploy.job_id, attempt=deploy.attempt, node_id=self.node_id, ok=True
            )
        )

    def _start(self, start: StartTasks) -> None:
        runtime = self._runtime(start.job_id, start.attempt)
        if runtime is None or self._tg is None:
            log.warning("start for unknown job %s attempt %d", start.job_id, start.attempt)
            return
        self._tg.start_soon(self._run_job, runtime)

    async def _run_job(self, runtime: JobRuntime) -> None:
        self._running.add(runtime)
        try:
            await runtime.run()
        finally:
            self._running.discard(runtime)
            if not self._running and self._drained is not None:
                self._drained.set()
            if self.jobs.get(runtime.job_id) is runtime:
                del self.jobs[runtime.job_id]
            self._slots_changed()

    def _slots_changed(self) -> None:
        """Slots were freed: tell the coordinator now, not at the next heartbeat."""
        if self._control is not None and not self._left and not self._registering:
            self._control.send_nowait(self._heartbeat())
