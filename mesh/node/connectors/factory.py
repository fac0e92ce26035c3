"""Which runtime reader or writer serves each source and sink description."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.api import sinks
from mesh.errors import GraphError
from mesh.graph.logical import OperatorSpec
from mesh.node.connectors.readers import build_reader
from mesh.node.connectors.sqlite_sink import SqliteSink
from mesh.node.connectors.txn_sinks import JsonLinesSink
from mesh.node.connectors.writers import CollectSink, PrintSink, SinkOperator, ZmqPushSink
from mesh.node.operators.context import TaskContext

__all__ = ["build_reader", "build_sink"]

_SINKS: dict[type[Any], Callable[[OperatorSpec, Any, TaskContext], SinkOperator]] = {
    sinks.JsonLines: JsonLinesSink,
    sinks.SQLite: SqliteSink,
    sinks.Print: PrintSink,
    sinks.Collect: CollectSink,
    sinks.ZmqPush: ZmqPushSink,
}


def build_sink(spec: OperatorSpec, sink: sinks.Sink, ctx: TaskContext) -> SinkOperator:
    """The runtime operator for ``sink`` in the subtask described by ``ctx``."""
    factory = _SINKS.get(type(sink))
    if factory is None:
        raise GraphError(f"sink {type(sink).__name__} is not supported by this node")
    return factory(spec, sink, ctx)
