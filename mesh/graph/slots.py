"""How many slots a job needs, and which jobs no number of slots would fit (pure).

A slot-sharing group needs as many slots as its largest parallelism (slot k of a group
holds subtask k of every task in it); the job needs the sum over its groups. Tasks of a
co-location group must share one slot-sharing group and one parallelism. The scheduler
(``coordinator/scheduler.py``) and ``mesh run`` (sizing its embedded cluster) both ask.
"""

from __future__ import annotations

from mesh.errors import SchedulingError
from mesh.graph.execution import ExecutionGraph

__all__ = ["PLACEMENTS", "check_co_location", "slots_needed"]

#: How subtasks fill nodes: evenly over nodes, or the first node before the next.
PLACEMENTS = ("spread", "pack")


def slots_needed(eg: ExecutionGraph) -> dict[str, int]:
    """Slots needed per slot-sharing group (largest parallelism in the group)."""
    needed: dict[str, int] = {}
    for task in eg.job.tasks:
        group = task.slot_sharing_group
        needed[group] = max(needed.get(group, 0), task.parallelism)
    return needed


def check_co_location(eg: ExecutionGraph) -> None:
    """Raise SchedulingError if a co-location group spans slot-sharing groups or
    parallelisms (no number of slots would make such a job fit)."""
    groups: dict[str, list[tuple[str, str, int]]] = {}
    for task in eg.job.tasks:
        for op_id in task.operators:
            op = eg.logical.operator(op_id)
            if op.co_location_group is not None:
                groups.setdefault(op.co_location_group, []).append(
                    (op.uid, task.slot_sharing_group, task.parallelism)
                )
    for name, members in groups.items():
        if len({m[1] for m in members}) > 1:
            detail = ", ".join(f"{uid} in {group!r}" for uid, group, _ in members)
            raise SchedulingError(
                f"co-location group {name!r} spans slot-sharing groups ({detail}); "
                "co-located operators must share one slot-sharing group"
            )
        if len({m[2] for m in members}) > 1:
            detail = ", ".join(f"{uid} has {p}" for uid, _, p in members)
            raise SchedulingError(f"co-location group {name!r} needs equal parallelism ({detail})")
