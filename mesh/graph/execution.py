"""The execution graph: every task × parallelism → subtasks, every job edge → channels.

Channel ids are assigned in one deterministic order (job edge, then producer subtask,
then consumer subtask), so the coordinator and every node number channels identically
from the same logical graph and a frame needs only the integer id.

Which consumers a producer subtask talks to depends on the edge's partitioning:
forward pairs subtask i with subtask i; rescale connects each producer to a contiguous
subset of consumers (or several producers to one consumer); every other partitioning
connects all producers to all consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.graph.chaining import JobGraph, build_job_graph
from mesh.graph.logical import LogicalGraph, Partitioning

__all__ = ["ChannelSpec", "ExecutionGraph", "SubtaskRef", "build_execution_graph"]


@dataclass(frozen=True, slots=True, order=True)
class SubtaskRef:
    """Subtask ``index`` of task ``task``."""

    task: int
    index: int

    def __str__(self) -> str:
        return f"{self.task}.{self.index}"

    @classmethod
    def parse(cls, text: str) -> SubtaskRef:
        """The subtask named ``"task.index"`` (what ``str`` gives)."""
        task, index = text.split(".")
        return cls(int(task), int(index))


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A one-way logical channel from one producer subtask to one consumer subtask."""

    id: int
    edge: int
    producer: SubtaskRef
    consumer: SubtaskRef


def _targets(partitioning: Partitioning, producer: int, p_up: int, p_down: int) -> list[int]:
    if partitioning is Partitioning.FORWARD:
        return [producer]
    if partitioning is Partitioning.RESCALE:
        if p_up <= p_down:
            return list(range(producer * p_down // p_up, (producer + 1) * p_down // p_up))
        return [producer * p_down // p_up]
    return list(range(p_down))


@dataclass(frozen=True, slots=True)
class ExecutionGraph:
    """Subtasks and channels of a job."""

    job: JobGraph
    channels: tuple[ChannelSpec, ...]

    @property
    def logical(self) -> LogicalGraph:
        """The logical graph this was built from."""
        return self.job.logical

    def subtasks(self) -> list[SubtaskRef]:
        """Every subtask, task by task."""
        return [SubtaskRef(t.id, i) for t in self.job.tasks for i in range(t.parallelism)]

    def output_channels(self, edge: int, producer: int) -> list[ChannelSpec]:
        """Channels of ``edge`` leaving producer subtask ``producer``, by consumer index."""
        return [c for c in self.channels if c.edge == edge and c.producer.index == producer]

    def input_channels(self, subtask: SubtaskRef) -> list[ChannelSpec]:
        """Channels arriving at ``subtask``, by channel id."""
        return [c for c in self.channels if c.consumer == subtask]


def build_execution_graph(graph: LogicalGraph | JobGraph) -> ExecutionGraph:
    """Expand a (chained) graph into subtasks and channels."""
    job = graph if isinstance(graph, JobGraph) else build_job_graph(graph)
    channels: list[ChannelSpec] = []
    for edge in job.edges:
        p_up = job.tasks[edge.source_task].parallelism
        p_down = job.tasks[edge.target_task].parallelism
        for producer in range(p_up):
            for consumer in _targets(edge.partitioning, producer, p_up, p_down):
                channels.append(
                    ChannelSpec(
                        id=len(channels),
                        edge=edge.id,
                        producer=SubtaskRef(edge.source_task, producer),
                        consumer=SubtaskRef(edge.target_task, consumer),
                    )
                )
    return ExecutionGraph(job=job, channels=tuple(channels))
