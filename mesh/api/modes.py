"""Job modes and what they decide per operator: whether a keyed aggregation emits
final values, and whether its producers combine before the keyed exchange (batch
mode; ``mesh.node.operators.combine``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.api.functions import Aggregate
from mesh.errors import GraphError
from mesh.graph.logical import OperatorKind, OperatorSpec

if TYPE_CHECKING:
    from mesh.api.job import OperatorDef

__all__ = ["AGGREGATION_KINDS", "JOB_MODES", "check_mode", "combines", "operator_description"]


#: Job modes: unbounded streams with checkpoints, or bounded input run to its end.
JOB_MODES = ("streaming", "batch")
#: Keyed aggregations, which emit every update or (``emit="final"``) final values.
AGGREGATION_KINDS = frozenset(
    {
        OperatorKind.REDUCE,
        OperatorKind.SUM,
        OperatorKind.MIN,
        OperatorKind.MAX,
        OperatorKind.COUNT,
        OperatorKind.AGGREGATE,
    }
)


def check_mode(mode: Any, what: str) -> str:
    """``mode`` if it is a job mode; GraphError naming ``what`` otherwise."""
    if mode not in JOB_MODES:
        raise GraphError(f"{what} must be 'streaming' or 'batch', got {mode!r}")
    return str(mode)


def operator_description(op: OperatorDef, batch: bool, combined: bool) -> dict[str, Any]:
    """``op``'s description, saying ``emit: final`` for a keyed aggregation that emits
    final values (asked for, or the batch-mode default), and ``combined`` when its
    producers send it partial values."""
    if op.kind in AGGREGATION_KINDS and (op.emit or ("final" if batch else "every")) == "final":
        return {**op.description, "emit": "final", **({"combined": True} if combined else {})}
    return op.description


def combines(op: OperatorDef, batch: bool, upstream: list[OperatorSpec], on_error: str) -> bool:
    """Whether ``op``'s producers fold records into partials before the keyed exchange:
    in batch mode, for a final-emitting aggregation that can merge partials, fed by one
    keyed edge without event time; not with dead letters (a record that makes a
    producer's fold raise cannot be set aside there)."""
    if not batch or op.emit == "every" or on_error == "dead_letter":
        return False
    if len(op.inputs) != 1 or op.inputs[0].key_fn is None or upstream[0].event_time:
        return False
    if op.kind is OperatorKind.AGGREGATE:
        return type(op.aggregate).merge is not Aggregate.merge
    return op.kind in AGGREGATION_KINDS
