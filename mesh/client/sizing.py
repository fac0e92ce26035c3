"""Sizing ``mesh run``'s embedded cluster for a job: slots per node, or why it can't fit.

The embedded cluster never grows, so a job that does not fit would only wait for slots
until ``slot_timeout``; it is refused before any daemon starts instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mesh.errors import SchedulingError
from mesh.graph.execution import build_execution_graph
from mesh.graph.logical import LogicalGraph
from mesh.graph.slots import check_co_location, slots_needed

__all__ = ["ClusterSize", "size_cluster"]


@dataclass(frozen=True, slots=True)
class ClusterSize:
    """Nodes and slots per node for a job, with what the job needs per sharing group."""

    nodes: int
    slots_per_node: int
    needed: dict[str, int]


def size_cluster(graph: dict[str, Any], nodes: int, slots: int | None) -> ClusterSize:
    """The cluster ``mesh run --nodes N [--slots S]`` starts for the job ``graph``
    (``LogicalGraph.to_dict()``); without ``slots``, just enough per node.

    Raises SchedulingError naming what the job needs if it cannot fit.
    """
    eg = build_execution_graph(LogicalGraph.from_dict(graph))
    check_co_location(eg)
    groups = slots_needed(eg)
    needed = sum(groups.values())
    per_node = slots or max(1, math.ceil(needed / nodes))
    if nodes * per_node < needed:
        per_group = ", ".join(f"{g}: {n}" for g, n in groups.items())
        raise SchedulingError(
            f"job needs {needed} slot(s) ({per_group}) but --nodes {nodes} x --slots "
            f"{per_node} gives {nodes * per_node}; give more --nodes or --slots (or leave "
            "--slots out)"
        )
    return ClusterSize(nodes=nodes, slots_per_node=per_node, needed=groups)
