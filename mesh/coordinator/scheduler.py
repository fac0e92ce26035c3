"""The slot scheduler (pure): an execution graph plus free slots → a placement.

Rules (Flink's):
* A slot-sharing group needs as many slots as its largest parallelism; slot k of a
  group holds subtask k of every task in the group, so a whole pipeline can share a
  slot. The job needs the sum over its groups.
* Tasks of one co-location group must be in the same sharing group and have the same
  parallelism; subtask i of each then shares slot i (true by the rule above).
* ``spread`` takes each next slot from the node with the most free slots (ties by node
  id), so subtasks spread evenly; ``pack`` fills the first node before the next. Node
  ids compare in natural order: node-2 before node-10.

If the slots do not suffice, ``SchedulingError`` says how many are needed per group and
what each node offers; the coordinator then lets the job wait (up to ``slot_timeout``).
"""

from __future__ import annotations

import re

from mesh.errors import SchedulingError
from mesh.graph.execution import ExecutionGraph, SubtaskRef
from mesh.graph.slots import PLACEMENTS, check_co_location, slots_needed
from mesh.protocol.messages import TaskAssignment

__all__ = ["PLACEMENTS", "check_co_location", "natural_key", "schedule", "slots_needed"]


def natural_key(node_id: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key for node ids: runs of ASCII digits compare as numbers (node-2 before
    node-10); the id itself breaks ties (node-02 and node-2)."""
    parts = re.split(r"([0-9]+)", node_id)
    return (
        tuple((0, int(p)) if i % 2 else (1, p) for i, p in enumerate(parts) if p),
        node_id,
    )


def _describe(free: dict[str, list[int]], totals: dict[str, int]) -> str:
    if not totals:
        return "no nodes are registered"
    parts = [
        f"{node} offers {len(free.get(node, []))} free of {totals[node]}"
        for node in sorted(totals, key=natural_key)
    ]
    return "; ".join(parts)


def schedule(
    eg: ExecutionGraph,
    free: dict[str, list[int]],
    totals: dict[str, int],
    *,
    placement: str = "spread",
) -> list[TaskAssignment]:
    """Place every subtask of ``eg`` in the ``free`` slots (node id → slot numbers)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    check_co_location(eg)
    needed = slots_needed(eg)
    total_needed = sum(needed.values())
    available = sum(len(slots) for slots in free.values())
    if total_needed > available:
        per_group = ", ".join(f"{g}: {n}" for g, n in needed.items())
        raise SchedulingError(
            f"job needs {total_needed} slot(s) ({per_group}) but the cluster has "
            f"{available} free: {_describe(free, totals)}. Start more nodes or give them "
            "more --slots."
        )
    remaining = {
        node: list(slots) for node, slots in sorted(free.items(), key=lambda i: natural_key(i[0]))
    }
    group_slots: dict[str, list[tuple[str, int]]] = {}
    for group, count in needed.items():
        chosen = []
        for _ in range(count):
            candidates = [n for n in remaining if remaining[n]]
            if placement == "spread":
                node = min(candidates, key=lambda n: (-len(remaining[n]), natural_key(n)))
            else:
                node = candidates[0]
            chosen.append((node, remaining[node].pop(0)))
        group_slots[group] = chosen
    assignments = []
    for task in eg.job.tasks:
        slots = group_slots[task.slot_sharing_group]
        for index in range(task.parallelism):
            node, slot = slots[index]
            assignments.append(
                TaskAssignment(subtask=str(SubtaskRef(task.id, index)), node_id=node, slot=slot)
            )
    return assignments
