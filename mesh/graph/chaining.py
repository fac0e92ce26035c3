"""Chaining: fuse operators into tasks, Flink's rules.

An edge ``up -> down`` is chained (``down`` runs in ``up``'s task, records passed by
plain function call, batch at a time) only when all of these hold:

1. it is a forward edge of ``up``'s main output (not a side output) and both ends have
   the same parallelism;
2. it is ``up``'s only main output and ``down``'s only input — chains are straight lines,
   so a record object is never shared by two consumers (fan-out goes through channels,
   which copy);
3. both are in the same slot-sharing group;
4. ``up`` allows chaining to its output (not ``disable_chaining``) and ``down`` allows
   chaining to its input (neither ``disable_chaining`` nor ``start_new_chain``).

Every other edge becomes a ``JobEdge`` between two tasks, carried by channels.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.graph.logical import Chaining, EdgeSpec, LogicalGraph, OperatorSpec, Partitioning

__all__ = ["JobEdge", "JobGraph", "TaskSpec", "build_job_graph", "is_chainable"]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A chain of operators that runs as one unit, ``parallelism`` times."""

    id: int
    operators: tuple[int, ...]  # operator ids, head first
    parallelism: int
    slot_sharing_group: str
    co_location_group: str | None
    name: str

    @property
    def head(self) -> int:
        """The first operator of the chain (the one that receives the task's input)."""
        return self.operators[0]

    @property
    def tail(self) -> int:
        """The last operator of the chain."""
        return self.operators[-1]


@dataclass(frozen=True, slots=True)
class JobEdge:
    """An edge between two tasks; ``source_op`` is in the source task, ``target_op`` heads
    the target task."""

    id: int
    source_task: int
    target_task: int
    source_op: int
    target_op: int
    partitioning: Partitioning
    tag: str | None = None  # a side output of ``source_op`` (which may be mid-chain)


@dataclass(frozen=True, slots=True)
class JobGraph:
    """The logical graph after chaining."""

    logical: LogicalGraph
    tasks: tuple[TaskSpec, ...]
    edges: tuple[JobEdge, ...]
    task_of_operator: tuple[int, ...]  # operator id -> task id

    def inputs_of(self, task_id: int) -> list[JobEdge]:
        """Job edges into ``task_id``."""
        return [e for e in self.edges if e.target_task == task_id]

    def outputs_of(self, task_id: int) -> list[JobEdge]:
        """Job edges out of ``task_id``."""
        return [e for e in self.edges if e.source_task == task_id]


def is_chainable(graph: LogicalGraph, edge: EdgeSpec) -> bool:
    """Whether ``edge`` may be fused (see the module rules)."""
    up: OperatorSpec = graph.operator(edge.source)
    down: OperatorSpec = graph.operator(edge.target)
    return (
        edge.partitioning is Partitioning.FORWARD
        and edge.tag is None
        and up.parallelism == down.parallelism
        and len(graph.main_outputs_of(up.id)) == 1
        and len(graph.inputs_of(down.id)) == 1
        and up.slot_sharing_group == down.slot_sharing_group
        and up.chaining is not Chaining.NEVER
        and down.chaining is Chaining.ALWAYS
    )


def build_job_graph(graph: LogicalGraph) -> JobGraph:
    """Fuse chainable operators into tasks and turn the other edges into job edges."""
    chains: list[list[int]] = []
    chain_of: dict[int, int] = {}
    for op in graph.operators:  # ids ascend along every edge, so inputs come first
        inputs = graph.inputs_of(op.id)
        if len(inputs) == 1 and is_chainable(graph, inputs[0]):
            index = chain_of[inputs[0].source]
            chains[index].append(op.id)
        else:
            index = len(chains)
            chains.append([op.id])
        chain_of[op.id] = index

    tasks = []
    for task_id, ops in enumerate(chains):
        head = graph.operator(ops[0])
        tasks.append(
            TaskSpec(
                id=task_id,
                operators=tuple(ops),
                parallelism=head.parallelism,
                slot_sharing_group=head.slot_sharing_group,
                co_location_group=head.co_location_group,
                name=" -> ".join(graph.operator(o).name for o in ops),
            )
        )

    job_edges: list[JobEdge] = []
    for edge in graph.edges:
        if chain_of[edge.source] == chain_of[edge.target]:
            continue
        job_edges.append(
            JobEdge(
                id=len(job_edges),
                source_task=chain_of[edge.source],
                target_task=chain_of[edge.target],
                source_op=edge.source,
                target_op=edge.target,
                partitioning=edge.partitioning,
                tag=edge.tag,
            )
        )
    return JobGraph(
        logical=graph,
        tasks=tuple(tasks),
        edges=tuple(job_edges),
        task_of_operator=tuple(chain_of[op.id] for op in graph.operators),
    )
