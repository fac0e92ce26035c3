"""``build_operator``: the runtime operator for each operator definition of a job."""

from __future__ import annotations

from collections.abc import Callable

from mesh.api.job import OperatorDef
from mesh.errors import GraphError
from mesh.graph.logical import OperatorKind, OperatorSpec
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.keyed import (
    COMBINERS,
    AggregateOperator,
    CountOperator,
    KeyedAggregateOperator,
    ReduceOperator,
)
from mesh.node.operators.process import KeyedProcessOperator, ProcessOperator
from mesh.node.operators.stateless import StatelessOperator
from mesh.node.operators.windowing import WindowOperator
from mesh.state.backends import KeyedStateBackend

__all__ = ["build_operator"]


def build_operator(
    spec: OperatorSpec,
    definition: OperatorDef,
    *,
    backend: Callable[[], KeyedStateBackend],
    subtask_index: int = 0,
    parallelism: int = 1,
) -> RuntimeOperator:
    """The runtime operator for one definition (sources and sinks are built elsewhere).

    ``backend`` makes the keyed state backend of a keyed operator.
    """
    kind = OperatorKind(definition.kind)
    fn = definition.fn
    if kind in StatelessOperator.KINDS:
        assert fn is not None
        return StatelessOperator(spec, fn)
    if kind is OperatorKind.PROCESS:
        return ProcessOperator.build(spec, fn, subtask_index, parallelism)
    key_fn = definition.key_fn
    if key_fn is None:
        raise GraphError(f"operator {spec.uid!r} ({kind}) needs a keyed stream")
    state = backend()
    if kind is OperatorKind.KEYED_PROCESS:
        return KeyedProcessOperator.build(spec, key_fn, state, fn, subtask_index, parallelism)
    if kind is OperatorKind.WINDOW:
        return WindowOperator(spec, key_fn, state, definition.window)
    if kind is OperatorKind.REDUCE:
        assert fn is not None
        return ReduceOperator(spec, key_fn, state, fn)
    if kind is OperatorKind.COUNT:
        return CountOperator(spec, key_fn, state)
    if kind is OperatorKind.AGGREGATE:
        return KeyedAggregateOperator(spec, key_fn, state, definition.aggregate)
    if kind in COMBINERS:
        assert definition.field_name is not None
        return AggregateOperator(spec, key_fn, state, definition.field_name, COMBINERS[kind])
    raise GraphError(f"operator {spec.uid!r}: unknown kind {kind!r}")
