"""``Stream`` and ``KeyedStream``: the user's handles for adding operators.

A stream stands for the output of one operator (or a union of several), plus how the
next operator should receive it (its partitioning). Operator options (``name``,
``uid``, ``set_parallelism``, ...) apply to the operator that produced the stream and
return the same stream, so they chain: ``s.map(f).name("parse").set_parallelism(4)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mesh.api.functions import Aggregate, ProcessFunction
from mesh.api.job import InputRef, Job, OperatorDef, positive_int
from mesh.api.sinks import Sink
from mesh.api.windowed import WindowedStream
from mesh.api.windows import WindowAssigner
from mesh.errors import GraphError
from mesh.graph.logical import Chaining, OperatorKind, Partitioning

__all__ = ["KeyedStream", "Stream", "StreamSink", "WindowedStream"]


#: What keyed aggregations emit: a value after ``every`` record, or ``final`` values only.
EMIT_MODES = ("every", "final")


def _check_fn(fn: Any, method: str) -> None:
    if not callable(fn):
        raise GraphError(f"{method}() expects a function, got {type(fn).__name__}")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GraphError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_process(fn: Any, method: str) -> None:
    if isinstance(fn, type):
        raise GraphError(f"{method}() expects an instance, not the class {fn.__name__}; add ()")
    if not (isinstance(fn, ProcessFunction) or callable(fn)):
        raise GraphError(
            f"{method}() expects a ProcessFunction or a function (record, ctx), "
            f"got {type(fn).__name__}"
        )


def _check_aggregate(aggregate: Any) -> None:
    if isinstance(aggregate, type):
        raise GraphError(
            f"aggregate() expects an instance, not the class {aggregate.__name__}; add ()"
        )
    if not isinstance(aggregate, Aggregate):
        raise GraphError(f"aggregate() expects a mesh.Aggregate, got {type(aggregate).__name__}")


def _process_name(fn: Any) -> str:
    if isinstance(fn, ProcessFunction):
        return type(fn).__name__
    return getattr(fn, "__name__", "Process").replace("<lambda>", "Process")


class _OperatorOptions:
    """Options that apply to the operator behind a handle."""

    def __init__(self, job: Job, op_id: int | None) -> None:
        self._job = job
        self._op_id = op_id

    def _op(self, option: str) -> OperatorDef:
        if self._op_id is None:
            raise GraphError(
                f".{option}() applies to an operator, but this stream is a union of several; "
                "set it on the operators before union() or after the next operator"
            )
        return self._job._operator(self._op_id)

    def name(self, name: str) -> Any:
        """Name the operator (shown in ``mesh status``)."""
        self._op("name").name = _check_name(name, "name")
        return self

    def uid(self, uid: str) -> Any:
        """Give the operator a stable identity for its state across code changes."""
        self._op("uid").uid = _check_name(uid, "uid")
        return self

    def set_parallelism(self, parallelism: int) -> Any:
        """Run the operator with ``parallelism`` subtasks."""
        self._op("set_parallelism").parallelism = positive_int(parallelism, "set_parallelism()")
        return self

    def slot_sharing_group(self, group: str) -> Any:
        """Put the operator in a named slot-sharing group."""
        self._op("slot_sharing_group").slot_sharing_group = _check_name(group, "group")
        return self

    def co_location_group(self, group: str) -> Any:
        """Run subtask i of every operator in ``group`` in the same slot."""
        self._op("co_location_group").co_location_group = _check_name(group, "group")
        return self

    def disable_chaining(self) -> Any:
        """Never fuse this operator with its neighbours."""
        self._op("disable_chaining").chaining = Chaining.NEVER
        return self

    def start_new_chain(self) -> Any:
        """Start a new chain at this operator (it may still chain to what follows)."""
        op = self._op("start_new_chain")
        if op.chaining is not Chaining.NEVER:
            op.chaining = Chaining.HEAD
        return self


class Stream(_OperatorOptions):
    """A stream of records."""

    def __init__(self, job: Job, inputs: list[InputRef], op_id: int | None) -> None:
        super().__init__(job, op_id)
        self._inputs = inputs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(job={self._job.name!r}, operator={self._op_id})"

    # -- transformations ----------------------------------------------------------------

    def _then(self, kind: OperatorKind, default_name: str, **fields: Any) -> Stream:
        op = self._job._add(kind, self._inputs, default_name=default_name, **fields)
        return Stream(self._job, [InputRef(op.id, None)], op.id)

    def map(self, fn: Callable[[Any], Any]) -> Stream:
        """Apply ``fn`` to every record."""
        _check_fn(fn, "map")
        return self._then(OperatorKind.MAP, "Map", fn=fn)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Stream:
        """Replace every record by the records of the iterable ``fn`` returns."""
        _check_fn(fn, "flat_map")
        return self._then(OperatorKind.FLAT_MAP, "FlatMap", fn=fn)

    def filter(self, fn: Callable[[Any], Any]) -> Stream:
        """Keep the records for which ``fn`` is true."""
        _check_fn(fn, "filter")
        return self._then(OperatorKind.FILTER, "Filter", fn=fn)

    def key_by(self, fn: Callable[[Any], Any]) -> KeyedStream:
        """Partition the stream by ``fn(record)``: equal keys go to the same subtask."""
        _check_fn(fn, "key_by")
        inputs = [InputRef(ref.op, Partitioning.HASH, fn, ref.tag) for ref in self._inputs]
        return KeyedStream(self._job, inputs, self._op_id, fn)

    def process(self, fn: Any) -> Stream:
        """Apply a ``ProcessFunction`` (or ``fn(record, ctx)``): it returns or yields the
        records to emit."""
        _check_process(fn, "process")
        return self._then(OperatorKind.PROCESS, _process_name(fn), fn=fn)

    def union(self, *streams: Stream) -> Stream:
        """Merge this stream with ``streams`` (records interleave in arrival order)."""
        inputs = list(self._inputs)
        for other in streams:
            if not isinstance(other, Stream):
                raise GraphError(f"union() expects streams, got {type(other).__name__}")
            if other._job is not self._job:
                raise GraphError("union() of streams from different jobs")
            inputs.extend(other._inputs)
        return Stream(self._job, inputs, None)

    def side_output(self, tag: str) -> Stream:
        """The records this stream's operator emitted under ``tag``: with
        ``ctx.output(tag, value)`` in a process function, or a window's
        ``late_output(tag)``."""
        if self._op_id is None:
            raise GraphError("side_output() applies to an operator's stream, not to a union")
        _check_name(tag, "side_output tag")
        return Stream(self._job, [InputRef(self._op_id, None, tag=tag)], None)

    def sink(self, sink: Sink) -> StreamSink:
        """Send the stream to ``sink``."""
        if not isinstance(sink, Sink):
            raise GraphError(f"sink() expects a mesh.sinks object, got {type(sink).__name__}")
        op = self._job._add(
            OperatorKind.SINK,
            self._inputs,
            sink=sink,
            default_name=f"Sink: {type(sink).__name__}",
            description=sink.describe(),
        )
        return StreamSink(self._job, op.id)

    # -- partitioning -------------------------------------------------------------------

    def _partitioned(self, partitioning: Partitioning) -> Stream:
        inputs = [InputRef(ref.op, partitioning, tag=ref.tag) for ref in self._inputs]
        return Stream(self._job, inputs, self._op_id)

    def forward(self) -> Stream:
        """Subtask i sends to subtask i of the next operator (needs equal parallelism)."""
        return self._partitioned(Partitioning.FORWARD)

    def rebalance(self) -> Stream:
        """Round-robin over all subtasks of the next operator."""
        return self._partitioned(Partitioning.REBALANCE)

    def rescale(self) -> Stream:
        """Round-robin over a local subset of the next operator's subtasks."""
        return self._partitioned(Partitioning.RESCALE)

    def broadcast(self) -> Stream:
        """Every record to every subtask of the next operator."""
        return self._partitioned(Partitioning.BROADCAST)

    def shuffle(self) -> Stream:
        """Each record to a random subtask of the next operator."""
        return self._partitioned(Partitioning.SHUFFLE)


class KeyedStream(Stream):
    """A stream partitioned by key; keyed operators keep state per key."""

    def __init__(
        self, job: Job, inputs: list[InputRef], op_id: int | None, key_fn: Callable[[Any], Any]
    ) -> None:
        super().__init__(job, inputs, op_id)
        self._key_fn = key_fn

    def _keyed(self, kind: OperatorKind, default_name: str, **fields: Any) -> Stream:
        emit = fields.get("emit")
        if emit is not None and emit not in EMIT_MODES:
            raise GraphError(f"emit must be 'every' or 'final', got {emit!r}")
        op = self._job._add(
            kind, self._inputs, default_name=default_name, key_fn=self._key_fn, **fields
        )
        return Stream(self._job, [InputRef(op.id, None)], op.id)

    def reduce(self, fn: Callable[[Any, Any], Any], *, emit: str | None = None) -> Stream:
        """Reduce per key: ``fn(previous, record)``. Emits the new value after every
        record, or with ``emit="final"`` each key's last value once the input ends
        (the default in batch mode)."""
        _check_fn(fn, "reduce")
        return self._keyed(OperatorKind.REDUCE, "Reduce", fn=fn, emit=emit)

    def sum(self, field: str, *, emit: str | None = None) -> Stream:
        """Sum of ``record[field]`` per key: emits the record with the running sum (with
        ``emit="final"``, each key's last record with the total, once the input ends)."""
        return self._keyed(
            OperatorKind.SUM, f"Sum({_check_name(field, 'field')})", field_name=field, emit=emit
        )

    def min(self, field: str, *, emit: str | None = None) -> Stream:
        """Minimum of ``record[field]`` per key; emits the record with it (``emit`` as
        for ``sum``)."""
        return self._keyed(
            OperatorKind.MIN, f"Min({_check_name(field, 'field')})", field_name=field, emit=emit
        )

    def max(self, field: str, *, emit: str | None = None) -> Stream:
        """Maximum of ``record[field]`` per key; emits the record with it (``emit`` as
        for ``sum``)."""
        return self._keyed(
            OperatorKind.MAX, f"Max({_check_name(field, 'field')})", field_name=field, emit=emit
        )

    def count(self, *, emit: str | None = None) -> Stream:
        """Count per key: emits ``{"key": k, "count": n}`` after every record (with
        ``emit="final"``, once per key when the input ends)."""
        return self._keyed(OperatorKind.COUNT, "Count", emit=emit)

    def aggregate(self, aggregate: Aggregate, *, emit: str | None = None) -> Stream:
        """Fold each key's records into an ``Aggregate`` accumulator; emits
        ``{"key": k, "value": aggregate.result(acc)}`` after every record, or with
        ``emit="final"`` once per key when the input ends (a bounded job's totals;
        an unbounded job never ends, so it emits nothing)."""
        _check_aggregate(aggregate)
        return self._keyed(
            OperatorKind.AGGREGATE,
            f"Aggregate({type(aggregate).__name__})",
            aggregate=aggregate,
            emit=emit,
        )

    def process(self, fn: Any) -> Stream:
        """Apply a ``KeyedProcessFunction`` (or ``fn(record, ctx)``) with keyed state in
        ``ctx.state``, timers in ``ctx.timers`` and the key in ``ctx.key``."""
        _check_process(fn, "process")
        return self._keyed(OperatorKind.KEYED_PROCESS, _process_name(fn), fn=fn)

    def window(self, assigner: WindowAssigner) -> WindowedStream:
        """Cut each key's records into windows (``mesh.windows``); then apply
        ``count``/``reduce``/``aggregate``/``process`` to each window."""
        return WindowedStream(self._job, self._inputs, self._key_fn, assigner)


class StreamSink(_OperatorOptions):
    """The handle of a sink operator: only operator options apply."""

    def __repr__(self) -> str:
        return f"StreamSink(job={self._job.name!r}, operator={self._op_id})"
