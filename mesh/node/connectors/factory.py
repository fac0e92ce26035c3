"""Which runtime reader or writer serves each source and sink description.

The built-in connectors' readers and writers live on the node (they use its sockets and
record encoding); any other description says how it is read or written itself
(``Source.create_reader``, ``Sink.create_writer``/``create_committer``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from mesh.api import sinks
from mesh.connectors.base import Committer, SinkWriter, Source, SourceReader
from mesh.errors import GraphError
from mesh.graph.logical import OperatorSpec
from mesh.node.connectors.readers import builtin_reader
from mesh.node.connectors.sqlite_sink import SqliteCommitter, SqliteWriter
from mesh.node.connectors.txn_sinks import JsonLinesCommitter, JsonLinesWriter, TwoPhaseSink
from mesh.node.connectors.writers import CollectWriter, PrintWriter, SinkOperator, ZmqPushWriter
from mesh.node.operators.context import TaskContext

__all__ = ["build_reader", "build_sink"]

_Maker = Callable[[OperatorSpec, Any, TaskContext], Any]
# Built-in sinks: (writer, committer or None).
_SINKS: dict[type[Any], tuple[_Maker, _Maker | None]] = {
    sinks.JsonLines: (JsonLinesWriter, JsonLinesCommitter),
    sinks.SQLite: (SqliteWriter, SqliteCommitter),
    sinks.Print: (PrintWriter, None),
    sinks.Collect: (CollectWriter, None),
    sinks.ZmqPush: (ZmqPushWriter, None),
}


def _for(ctx: TaskContext, spec: OperatorSpec) -> TaskContext:
    return dataclasses.replace(ctx, operator_uid=spec.uid, operator_name=spec.name)


def build_reader(spec: OperatorSpec, source: Source, ctx: TaskContext) -> SourceReader:
    """The reader of ``source`` in the subtask described by ``ctx``."""
    ctx = _for(ctx, spec)
    reader = builtin_reader(source, ctx)
    if reader is None:
        reader = source.create_reader(ctx)
        if not isinstance(reader, SourceReader):
            raise GraphError(
                f"source {spec.uid!r}: {type(source).__name__}.create_reader returned "
                f"{type(reader).__name__}, not a mesh.connectors.SourceReader"
            )
    return reader


def build_sink(spec: OperatorSpec, sink: sinks.Sink, ctx: TaskContext) -> SinkOperator:
    """The runtime operator for ``sink`` in the subtask described by ``ctx``."""
    ctx = _for(ctx, spec)
    makers = _SINKS.get(type(sink))
    writer: Any
    committer: Any
    if makers is not None:
        make_writer, make_committer = makers
        writer = make_writer(spec, sink, ctx)
        committer = make_committer(spec, sink, ctx) if make_committer is not None else None
    else:
        writer = sink.create_writer(ctx)
        committer = sink.create_committer(ctx)
        if not isinstance(writer, SinkWriter):
            raise GraphError(
                f"sink {spec.uid!r}: {type(sink).__name__}.create_writer returned "
                f"{type(writer).__name__}, not a mesh.connectors.SinkWriter"
            )
        if committer is not None and not isinstance(committer, Committer):
            raise GraphError(
                f"sink {spec.uid!r}: {type(sink).__name__}.create_committer returned "
                f"{type(committer).__name__}, not a mesh.connectors.Committer"
            )
    if committer is None:
        return SinkOperator(spec, writer)
    return TwoPhaseSink(spec, ctx, writer, committer)
