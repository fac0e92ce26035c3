"""The coordinator's view of the nodes: who is there, what slots they have free (pure).

A node is known from its registration until it is removed (lost heartbeats, a graceful
leave, or a new registration under the same id, which means the old process is gone).
Slots are handed to jobs by the scheduler and given back when the job ends.

A slot is busy if the coordinator gave it to a job (``used``) or if the node says
subtasks still occupy it (``held``: reported on registration and with every heartbeat).
The second covers what the coordinator cannot know by itself: after the coordinator
restarts, or while a cancelled attempt is still winding down on a node, a slot is not
handed out again until its node reports it free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.protocol.messages import PeerAddress, SlotInUse, TaskAssignment

__all__ = ["NodeInfo", "NodeRegistry"]


@dataclass(eq=False)
class NodeInfo:
    """One registered node."""

    node_id: str
    identity: bytes  # the routing id of its control connection
    slots: int
    address: PeerAddress
    host: str
    pid: int
    registered_ms: float
    last_heartbeat_ms: float
    rss_bytes: int = 0
    wire_errors: int = 0
    # slot number -> job id the coordinator gave it to
    used: dict[int, str] = field(default_factory=dict)
    # slot number -> job id whose subtasks the node says still occupy it
    held: dict[int, str] = field(default_factory=dict)

    def free_slots(self) -> list[int]:
        """Slot numbers nobody uses, ascending."""
        return [s for s in range(self.slots) if s not in self.used and s not in self.held]

    def report(self, occupied: list[SlotInUse]) -> None:
        """The node says which slots its subtasks occupy now (replacing what it said
        before); slots the coordinator gave to that job are accounted for already."""
        self.held = {
            u.slot: u.job_id
            for u in occupied
            if 0 <= u.slot < self.slots and self.used.get(u.slot) != u.job_id
        }

    def summary(self, now_ms: float) -> dict[str, object]:
        """A JSON-ready description for ``mesh nodes`` and status."""
        return {
            "node_id": self.node_id,
            "host": self.host,
            "pid": self.pid,
            "slots": self.slots,
            "free": len(self.free_slots()),
            "used": self.slots - len(self.free_slots()),
            "data_endpoint": self.address.data_endpoint,
            "last_heartbeat_ms_ago": round(now_ms - self.last_heartbeat_ms),
            "rss_bytes": self.rss_bytes,
            "wire_errors": self.wire_errors,
            "jobs": sorted({*self.used.values(), *self.held.values()}),
        }


class NodeRegistry:
    """Registered nodes and their slot usage."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}

    def register(self, node: NodeInfo) -> NodeInfo | None:
        """Add ``node``; returns the registration it replaces (same id), if any."""
        previous = self.nodes.get(node.node_id)
        self.nodes[node.node_id] = node
        return previous

    def get(self, node_id: str) -> NodeInfo | None:
        """The node registered as ``node_id``."""
        return self.nodes.get(node_id)

    def heartbeat(
        self,
        node_id: str,
        now_ms: float,
        *,
        rss_bytes: int,
        wire_errors: int,
        occupied: list[SlotInUse] | None = None,
    ) -> bool:
        """Record a heartbeat; False if the node is not registered."""
        node = self.nodes.get(node_id)
        if node is None:
            return False
        node.last_heartbeat_ms = now_ms
        node.rss_bytes = rss_bytes
        node.wire_errors = wire_errors
        if occupied is not None:
            node.report(occupied)
        return True

    def expired(self, now_ms: float, timeout_ms: float) -> list[str]:
        """Nodes silent for longer than ``timeout_ms``."""
        return [n.node_id for n in self.nodes.values() if now_ms - n.last_heartbeat_ms > timeout_ms]

    def remove(self, node_id: str) -> NodeInfo | None:
        """Forget a node (its slots go with it)."""
        return self.nodes.pop(node_id, None)

    def free_slots(self) -> dict[str, list[int]]:
        """Free slot numbers per node."""
        return {n.node_id: n.free_slots() for n in self.nodes.values()}

    def allocate(self, job_id: str, assignments: list[TaskAssignment]) -> None:
        """Mark the slots of ``assignments`` as used by ``job_id``."""
        for a in assignments:
            self.nodes[a.node_id].used[a.slot] = job_id

    def release(self, job_id: str) -> None:
        """Free every slot ``job_id`` used."""
        for node in self.nodes.values():
            for slot in [s for s, j in node.used.items() if j == job_id]:
                del node.used[slot]
