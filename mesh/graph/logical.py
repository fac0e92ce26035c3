"""The logical graph: operators and the edges between them, as plain serialisable data.

The user's calls on ``Job``/``Stream`` build this graph; it holds no functions, so the
client can send it to the coordinator (which never imports user code) and every node can
check that the graph it rebuilt from the shipped job file is exactly the submitted one
(``fingerprint``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from mesh.errors import GraphError

__all__ = [
    "DEAD_LETTER",
    "Chaining",
    "EdgeSpec",
    "JobConfig",
    "LogicalGraph",
    "OperatorKind",
    "OperatorSpec",
    "Partitioning",
]


class Partitioning(StrEnum):
    """How records of an edge are spread over the consuming subtasks."""

    FORWARD = "forward"  # subtask i → subtask i (equal parallelism)
    HASH = "hash"  # by key group of the record's key
    REBALANCE = "rebalance"  # round-robin over all consumers
    RESCALE = "rescale"  # round-robin over a local subset of consumers
    BROADCAST = "broadcast"  # every record to every consumer
    SHUFFLE = "shuffle"  # uniformly at random


class Chaining(StrEnum):
    """Whether an operator may be fused with its neighbours into one task."""

    ALWAYS = "always"  # may chain to its input and to its output
    HEAD = "head"  # starts a new chain; may chain to its output (start_new_chain)
    NEVER = "never"  # never chained (disable_chaining)


class OperatorKind(StrEnum):
    """What an operator does; nodes build its runtime operator from this."""

    SOURCE = "source"
    MAP = "map"
    FILTER = "filter"
    FLAT_MAP = "flat_map"
    PROCESS = "process"
    KEYED_PROCESS = "keyed_process"
    REDUCE = "reduce"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    AGGREGATE = "aggregate"
    WINDOW = "window"
    SINK = "sink"


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """One operator of the logical graph."""

    id: int  # position in creation order; edges refer to it
    uid: str  # stable identity of the operator's state
    name: str  # shown to people
    kind: OperatorKind
    parallelism: int
    max_parallelism: int
    chaining: Chaining = Chaining.ALWAYS
    slot_sharing_group: str = "default"
    co_location_group: str | None = None
    # A JSON description of what the operator does (source/sink settings); for status.
    description: dict[str, Any] = field(default_factory=dict)
    # Whether its output records carry event timestamps (from a source with watermarks).
    event_time: bool = False


#: The side-output tag of dead letters.
DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    """A directed edge between two operators."""

    source: int
    target: int
    partitioning: Partitioning
    # Records the source emits under this tag (None: its main output). The tag
    # DEAD_LETTER carries records that made user code raise (on_error="dead_letter").
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class JobConfig:
    """Job-wide settings, after defaults and overrides were applied."""

    name: str
    parallelism: int = 1
    max_parallelism: int = 128
    buffer_timeout_ms: int = 10
    checkpoint_interval_ms: int | None = None
    checkpoint_mode: str = "exactly_once"
    state_backend: str = "memory"
    checkpoint_dir: str | None = None
    # RestartStrategy.to_dict() of the strategy in effect (defaults resolved).
    restart: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    on_error: str = "fail"  # or "dead_letter"
    watermark_interval_ms: int = 200  # how often sources send watermarks
    trace_sample: float = 0.0  # fraction of source records traced end to end
    trace_sample_limit: int | None = 100  # at most this many a second per source subtask
    mode: str = "streaming"  # or "batch": bounded sources, final results, no checkpoints


@dataclass(frozen=True, slots=True)
class LogicalGraph:
    """Operators (in creation order) and edges: everything but the user's functions."""

    config: JobConfig
    operators: tuple[OperatorSpec, ...]
    edges: tuple[EdgeSpec, ...]

    def operator(self, op_id: int) -> OperatorSpec:
        """The operator with id ``op_id``."""
        return self.operators[op_id]

    def inputs_of(self, op_id: int) -> list[EdgeSpec]:
        """Edges into ``op_id``, in creation order."""
        return [e for e in self.edges if e.target == op_id]

    def outputs_of(self, op_id: int) -> list[EdgeSpec]:
        """Edges out of ``op_id``, in creation order."""
        return [e for e in self.edges if e.source == op_id]

    def main_outputs_of(self, op_id: int) -> list[EdgeSpec]:
        """Edges carrying ``op_id``'s main output (not a tagged side output)."""
        return [e for e in self.edges if e.source == op_id and e.tag is None]

    def sources(self) -> list[OperatorSpec]:
        """Operators with no inputs."""
        targets = {e.target for e in self.edges}
        return [op for op in self.operators if op.id not in targets]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (see ``from_dict``)."""
        return {
            "config": asdict(self.config),
            "operators": [asdict(op) for op in self.operators],
            "edges": [asdict(e) for e in self.edges],
        }

    @classmethod
    def from_dict(cls, data: Any) -> LogicalGraph:
        """Rebuild a graph from ``to_dict`` output; raises GraphError on a malformed one."""
        try:
            config = JobConfig(**data["config"])
            operators = tuple(
                OperatorSpec(
                    **{
                        **op,
                        "kind": OperatorKind(op["kind"]),
                        "chaining": Chaining(op["chaining"]),
                    },
                )
                for op in data["operators"]
            )
            edges = tuple(
                EdgeSpec(
                    source=int(e["source"]),
                    target=int(e["target"]),
                    partitioning=Partitioning(e["partitioning"]),
                    tag=None if e.get("tag") is None else str(e["tag"]),
                )
                for e in data["edges"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(f"malformed job graph: {exc}") from None
        graph = cls(config=config, operators=operators, edges=edges)
        try:
            graph.validate()
        except (TypeError, ValueError) as exc:
            raise GraphError(f"malformed job graph: {exc}") from None
        return graph

    def fingerprint(self) -> str:
        """A digest of the whole graph; equal graphs have equal fingerprints."""
        encoded = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(encoded).hexdigest()[:16]

    def differences(self, other: LogicalGraph, limit: int = 3) -> list[str]:
        """What differs between two graphs, for people (empty when they are equal)."""
        found: list[str] = []
        mine, theirs = self.to_dict(), other.to_dict()
        if mine["config"] != theirs["config"]:
            found.append(f"job settings {mine['config']} vs {theirs['config']}")
        if len(self.operators) != len(other.operators):
            found.append(f"{len(self.operators)} operators vs {len(other.operators)}")
        for a, b in zip(mine["operators"], theirs["operators"], strict=False):
            for key in a:
                if a[key] != b.get(key):
                    found.append(
                        f"operator {a['id']} {key}: {_shown(a[key])} vs {_shown(b.get(key))}"
                    )
        if mine["edges"] != theirs["edges"]:
            found.append("the edges between operators")
        return found[:limit]

    def validate(self) -> None:
        """Raise GraphError unless the graph can run."""
        ops = self.operators
        for index, op in enumerate(ops):
            if op.id != index:
                raise GraphError(f"operator ids must be 0..n-1 in order; {op.uid} has id {op.id}")
            if not 1 <= op.parallelism <= op.max_parallelism:
                raise GraphError(
                    f"operator {op.uid!r}: parallelism {op.parallelism} must be between 1 and "
                    f"max_parallelism {op.max_parallelism}"
                )
        uids = [op.uid for op in ops]
        dupes = sorted({u for u in uids if uids.count(u) > 1})
        if dupes:
            raise GraphError(f"operator uids must be unique; repeated: {', '.join(dupes)}")
        for e in self.edges:
            if not (0 <= e.source < len(ops) and 0 <= e.target < len(ops)):
                raise GraphError(f"edge {e.source}->{e.target} refers to a missing operator")
            if e.source >= e.target:
                raise GraphError(f"edge {e.source}->{e.target} goes backwards (cycle)")
            up, down = ops[e.source], ops[e.target]
            if e.partitioning is Partitioning.FORWARD and up.parallelism != down.parallelism:
                raise GraphError(
                    f"forward edge {up.uid!r} -> {down.uid!r} needs equal parallelism, got "
                    f"{up.parallelism} and {down.parallelism}; use rebalance() or rescale()"
                )
        if not self.sources():
            raise GraphError(f"job {self.config.name!r} has no source")
        if not any(op.kind == OperatorKind.SINK for op in ops):
            raise GraphError(
                f"job {self.config.name!r} has no sink; add one with .sink(...) so its output "
                "goes somewhere"
            )


def _shown(value: Any) -> str:
    """A value as a person reads it in a message (an enum member as its plain value)."""
    return repr(value.value if isinstance(value, StrEnum) else value)
