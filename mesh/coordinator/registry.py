"""The coordinator's view of the nodes: who is there, what slots they have free (pure).

A node is known from its registration until it is removed (lost heartbeats, a graceful
leave, or a new registration under the same id, which means the old process is gone).
Slots are handed to jobs by the scheduler and given back when the job ends.

A slot is busy if the coordinator gave it to a job attempt (``used``) or if the node
says subtasks of another job attempt occupy it (``reported``, on registration and with
every heartbeat). The second covers what the coordinator cannot know by itself: after
the coordinator restarts, or while a cancelled attempt is still ending on a node, a
slot is not handed out again until its node reports it free. A node that is leaving
(SIGTERM) offers no slots.
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
    # slot number -> (job id, attempt) the coordinator gave it to
    used: dict[int, tuple[str, int]] = field(default_factory=dict)
    # what the node said last: the (job id, attempt)s its subtasks occupy, per slot
    reported: dict[int, set[tuple[str, int]]] = field(default_factory=dict)
    leaving: bool = False  # it said it is stopping: no new subtasks go there

    @property
    def held(self) -> dict[int, str]:
        """Slots the node says subtasks occupy that the coordinator did not give them
        (now): slot -> job id."""
        return {
            slot: min(job for job, _ in owners - {self.used.get(slot)})
            for slot, owners in self.reported.items()
            if owners - {self.used.get(slot)}
        }

    def free_slots(self) -> list[int]:
        """Slot numbers nobody uses, ascending (none while the node is leaving)."""
        if self.leaving:
            return []
        held = self.held
        return [s for s in range(self.slots) if s not in self.used and s not in held]

    def report(self, occupied: list[SlotInUse]) -> None:
        """The node says which slots its subtasks occupy now (replacing what it said
        before)."""
        reported: dict[int, set[tuple[str, int]]] = {}
        for u in occupied:
            if 0 <= u.slot < self.slots:
                reported.setdefault(u.slot, set()).add((u.job_id, u.attempt))
        self.reported = reported

    def summary(self, now_ms: float) -> dict[str, object]:
        """A JSON-ready description for ``mesh nodes`` and status."""
        free = len([s for s in range(self.slots) if s not in self.used and s not in self.held])
        return {
            "node_id": self.node_id,
            "host": self.host,
            "pid": self.pid,
            "slots": self.slots,
            "free": free,
            "used": self.slots - free,
            "leaving": self.leaving,
            "data_endpoint": self.address.data_endpoint,
            "last_heartbeat_ms_ago": round(now_ms - self.last_heartbeat_ms),
            "rss_bytes": self.rss_bytes,
            "wire_errors": self.wire_errors,
            "jobs": sorted({job for job, _ in self.used.values()} | set(self.held.values())),
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
        """Free slot numbers per node that takes new subtasks (not leaving)."""
        return {n.node_id: n.free_slots() for n in self.nodes.values() if not n.leaving}

    def totals(self) -> dict[str, int]:
        """Slots per node that takes new subtasks (not leaving)."""
        return {n.node_id: n.slots for n in self.nodes.values() if not n.leaving}

    def allocate(self, job_id: str, attempt: int, assignments: list[TaskAssignment]) -> None:
        """Mark the slots of ``assignments`` as used by attempt ``attempt`` of ``job_id``."""
        for a in assignments:
            self.nodes[a.node_id].used[a.slot] = (job_id, attempt)

    def release(self, job_id: str) -> None:
        """Forget what the coordinator gave ``job_id``. A slot its node still reports
        busy stays busy until the node says otherwise."""
        for node in self.nodes.values():
            for slot in [s for s, (j, _) in node.used.items() if j == job_id]:
                del node.used[slot]
