"""Which nodes are in the cluster: registration, heartbeats, lost and leaving nodes.

A node registers with its slots (and the slots its subtasks still occupy, so a
coordinator that restarted rebuilds its view), then heartbeats with its subtasks'
metrics. A node silent for ``heartbeat_timeout`` is lost; a node that says it is
leaving (SIGTERM) has its jobs failed over at once. Either way the lifecycle fails the
jobs that ran there.
"""

from __future__ import annotations

import logging

from mesh._version import __version__
from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.jobs import JobTable
from mesh.coordinator.lifecycle import JobLifecycle
from mesh.coordinator.outbound import Caller, ControlOut
from mesh.coordinator.registry import NodeInfo, NodeRegistry
from mesh.protocol.messages import (
    Ack,
    Heartbeat,
    HeartbeatAck,
    NodeLeaving,
    PeerAddress,
    RegisterNode,
    RegisterReply,
    Reregister,
)
from mesh.protocol.states import JobState
from mesh.time.clock import Clock

__all__ = ["NodeMembership"]

log = logging.getLogger("mesh.coordinator")


class NodeMembership:
    """Answers nodes' registrations, heartbeats and leave notices; finds lost nodes."""

    def __init__(
        self,
        *,
        config: CoordinatorConfig,
        clock: Clock,
        nodes: NodeRegistry,
        jobs: JobTable,
        out: ControlOut,
        lifecycle: JobLifecycle,
    ) -> None:
        self._config = config
        self._clock = clock
        self._nodes = nodes
        self._jobs = jobs
        self._out = out
        self._lifecycle = lifecycle

    def on_register(self, caller: Caller, msg: RegisterNode) -> RegisterReply:
        """A node offers its slots."""
        if msg.version != __version__:
            return RegisterReply(
                ok=False,
                error=f"node runs mesh {msg.version}, coordinator runs {__version__}",
            )
        if msg.slots < 1:
            return RegisterReply(ok=False, error=f"a node needs at least 1 slot, got {msg.slots}")
        now = self._clock.monotonic_ms()
        previous = self._nodes.register(
            NodeInfo(
                node_id=msg.node_id,
                identity=caller.identity,
                slots=msg.slots,
                address=PeerAddress(msg.node_id, msg.data_endpoint, msg.control_endpoint),
                host=msg.host,
                pid=msg.pid,
                registered_ms=now,
                last_heartbeat_ms=now,
            )
        )
        node = self._nodes.nodes[msg.node_id]
        if previous is not None and previous.pid != msg.pid:
            self._lifecycle.node_gone(previous, "restarted")
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
            heartbeat_interval_ms=self._config.heartbeat_interval_ms,
            heartbeat_timeout_ms=self._config.heartbeat_timeout_ms,
        )

    def on_heartbeat(self, caller: Caller, msg: Heartbeat) -> HeartbeatAck | None:
        """A node is alive: note it, and take its subtasks' metrics."""
        now = self._clock.monotonic_ms()
        if not self._nodes.heartbeat(
            msg.node_id,
            now,
            rss_bytes=msg.rss_bytes,
            wire_errors=msg.wire_errors,
            occupied=msg.occupied,
        ):
            log.warning("heartbeat from unregistered node %s: asking it to register", msg.node_id)
            self._out.send(caller.identity, Reregister(reason="unknown node (declared lost)"))
            return None
        for job_id, metrics in msg.tasks.items():
            job = self._jobs.get(job_id)
            if job is None or job.done or job.state is JobState.RESTARTING:
                continue
            for m in metrics:
                job.update_metrics(m, now, from_heartbeat=True)
        return HeartbeatAck()

    def on_node_leaving(self, caller: Caller, msg: NodeLeaving) -> Ack:
        """A node stops gracefully: first its jobs fail over, then it goes away."""
        node = self._nodes.get(msg.node_id)
        if node is None or node.identity != caller.identity:
            return Ack(detail=f"node {msg.node_id} is not registered")
        if msg.stopped:
            self._lifecycle.node_gone(node, msg.reason, left=True)
            return Ack(detail="left")
        self._lifecycle.node_leaving(node, msg.reason)
        return Ack(detail="leaving")

    def expire(self, now_ms: float) -> None:
        """Nodes silent for longer than ``heartbeat_timeout`` are lost."""
        timeout = self._config.heartbeat_timeout_ms
        for node_id in self._nodes.expired(now_ms, timeout):
            node = self._nodes.get(node_id)
            if node is not None:
                self._lifecycle.node_gone(node, f"no heartbeat for {timeout} ms")
