"""Runtime operators: what runs inside a chain, one batch at a time.

Each operator turns a list of records into a list of records with plain loops and
comprehensions — no per-record ``await`` — which is what makes a chain of Python
functions fast. When user code raises, the batch is replayed record by record to name
the record at fault (user functions should be free of side effects, as in any stream
processor that replays after failures).

Keyed operators keep their state in tables of a ``KeyedStateBackend`` (dicts from key
to value, in memory or a cache over SQLite); the subtask snapshots the backend at each
checkpoint barrier. Operators with list state (sources' positions, sinks' pending
transactions) return it from ``snapshot_state`` and get it back in ``initialize``.

On a stream with event time, batches come with a parallel list of timestamps:
``process_timed`` returns the output with its timestamps (an output record inherits the
timestamp of the record it came from). Operators with timers (keyed process functions,
windows) fire them in ``on_watermark`` and ``on_processing_time``. Records for a side
output go to ``side_records`` as (tag, record, timestamp); the subtask routes them.
"""

from __future__ import annotations

import reprlib
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Any

import orjson

from mesh.api.job import OperatorDef
from mesh.errors import GraphError, RecordError
from mesh.graph.keygroups import KeyGroupRange, canonical_key
from mesh.graph.logical import OperatorSpec
from mesh.state.backends import KeyedStateBackend
from mesh.time.watermarks import NO_WATERMARK

__all__ = [
    "KeyedOperator",
    "Output",
    "RecordFailure",
    "RestoredState",
    "RuntimeOperator",
    "UserCodeError",
    "build_operator",
    "dead_letter",
    "describe_record",
    "first_failure",
]

#: What user code may raise that fails its task (SystemExit included: a job must not
#: stop its node); KeyboardInterrupt and cancellation still propagate.
UserCodeError = (Exception, SystemExit)

_dumps = orjson.dumps
_loads = orjson.loads

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxdict = 8
_repr.maxlist = 8


def first_failure(
    fn: Callable[[Any], Any], items: Iterable[Any]
) -> tuple[Any, BaseException] | None:
    """Replay ``fn`` item by item: the first item it raises on, with the exception.

    Batch code runs fast comprehensions; when one raises, this finds the culprit so the
    error can name it.
    """
    for item in items:
        try:
            fn(item)
        except UserCodeError as exc:
            return item, exc
    return None


class RecordFailure(RecordError):
    """User code raised on ``batch[index]``; ``output`` is what the records before it made.

    An operator raises it after applying the records before the failing one (their state
    updates stay), so the caller may set the record aside as a dead letter, pass
    ``output`` on, and go on with ``batch[index + 1:]``.
    """

    def __init__(
        self,
        error: RecordError,
        index: int,
        output: list[Any],
        stamps: list[int] | None = None,
    ) -> None:
        super().__init__(str(error))
        self.index = index
        self.output = output
        # The timestamps of ``output`` (None: one output per input record, so the
        # timestamps of the records before ``index``).
        self.stamps = stamps
        self.__cause__ = error.__cause__ or error


def dead_letter(spec: OperatorSpec, subtask: int, record: Any, failure: RecordFailure) -> Any:
    """What a dead-letter sink receives for a record that made user code raise."""
    cause = failure.__cause__ or failure
    try:
        _dumps(record)
    except TypeError:  # made by a chained operator, never encoded: keep what can be shown
        record = describe_record(record)
    return {
        "operator": spec.uid,
        "name": spec.name,
        "subtask": subtask,
        "error": str(failure),
        "traceback": "".join(traceback.format_exception(cause)).rstrip(),
        "record": record,
    }


def describe_record(record: Any) -> str:
    """A short, safe rendering of a record for error messages."""
    try:
        return _repr.repr(record)
    except UserCodeError:
        return f"<{type(record).__name__}>"


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What one operator subtask gets back from a checkpoint."""

    checkpoint_id: int
    job_id: str  # the job that took the checkpoint
    keyed_files: list[Path]  # snapshot files whose key groups overlap ours
    key_groups: KeyGroupRange  # the key groups this subtask owns now
    operator_state: dict[str, list[Any]]  # list state: this subtask's share
    all_operator_state: dict[str, list[Any]]  # list state of every old subtask (for cleanup)


Output = tuple[list[Any], list[int]]


class RuntimeOperator:
    """One operator of a chain."""

    #: The keyed state of this operator subtask (keyed operators only).
    backend: KeyedStateBackend | None = None
    #: Whether it has timers to fire (``on_watermark``/``on_processing_time``).
    has_timers = False

    def __init__(self, spec: OperatorSpec) -> None:
        self.spec = spec
        # Side-output records waiting to be routed: (tag, record, timestamp).
        self.side_records: list[tuple[str, Any, int]] = []
        # The operator's event time (the subtask's watermark).
        self.watermark = NO_WATERMARK
        # Records that came too late for every window they belong to.
        self.late_records = 0
        self.late_dropped = 0  # ... of which no side output took

    def _error(self, what: str, record: Any, exc: BaseException) -> RecordError:
        return RecordError(
            f"operator {self.spec.uid!r} ({self.spec.name}) {what} "
            f"{type(exc).__name__}: {exc} — on record {describe_record(record)}"
        )

    def open(self) -> None:
        """Called once before the first record."""

    async def initialize(self, restored: RestoredState | None) -> None:
        """Set up state: fresh (``restored`` is None) or from a checkpoint."""
        if self.backend is not None:
            await self.backend.open()
            if restored is not None:
                await self.backend.restore(restored.keyed_files, restored.key_groups)

    def process(self, batch: list[Any]) -> list[Any]:
        """Records in, records out."""
        raise NotImplementedError

    def process_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        """Records with event timestamps in, records with timestamps out. The default
        suits operators that emit exactly one record per input record."""
        return self.process(batch), stamps

    async def on_watermark(self, watermark: int) -> Output:
        """Event time reached ``watermark``: fire the timers it passed."""
        self.watermark = watermark
        return [], []

    async def on_processing_time(self, now_ms: int) -> Output:
        """The clock reached ``now_ms``: fire the processing-time timers due."""
        return [], []

    def next_processing_time(self) -> int | None:
        """When the earliest processing-time timer is due (None: none)."""
        return None

    def keys_of(self, batch: list[Any]) -> list[Any]:
        """The state keys a batch touches (keyed operators; for backends doing I/O)."""
        return []

    def snapshot_state(self, checkpoint_id: int) -> dict[str, list[Any]]:
        """List state to checkpoint, taken at the barrier (on the event loop)."""
        return {}

    @property
    def stateful(self) -> bool:
        """Whether checkpoints hold something for this operator."""
        return self.backend is not None

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` (and every one before it) completed."""

    def finish(self) -> list[Any]:
        """End of input: records still to emit."""
        return []

    def close(self) -> None:
        """Called once at the end, also after a failure or cancellation."""

    async def close_state(self) -> None:
        """Release the state backend."""
        if self.backend is not None:
            await self.backend.close()


def _decode_all(encoded: list[bytes]) -> list[Any]:
    return _loads(b"[" + b",".join(encoded) + b"]") if encoded else []


def _flat_map(fn: Callable[[Any], Any], batch: list[Any]) -> list[Any]:
    return [out for record in batch for out in fn(record)]


class _Stateless(RuntimeOperator):
    """map, filter and flat_map: one user function applied to a whole batch at once."""

    _APPLY: dict[str, Callable[[Callable[[Any], Any], list[Any]], list[Any]]] = {
        "map": lambda fn, batch: list(map(fn, batch)),
        "filter": lambda fn, batch: list(filter(fn, batch)),
        "flat_map": _flat_map,
    }

    def __init__(self, spec: OperatorSpec, fn: Callable[[Any], Any]) -> None:
        super().__init__(spec)
        self.fn = fn
        self._kind = spec.kind
        self._apply = self._APPLY[spec.kind]
        # What to replay per record to find the one that fails (flat_map: exhaust it).
        self._probe: Callable[[Any], Any] = (
            (lambda record: list(fn(record))) if spec.kind == "flat_map" else fn
        )

    def process(self, batch: list[Any]) -> list[Any]:
        try:
            return self._apply(self.fn, batch)
        except UserCodeError as exc:
            # Pure functions: replay record by record to find the one at fault.
            for index, record in enumerate(batch):
                try:
                    self._probe(record)
                except UserCodeError as inner:
                    error = self._error("raised", record, inner)
                    error.__cause__ = inner
                    raise RecordFailure(
                        error, index, self._apply(self.fn, batch[:index])
                    ) from inner
            raise self._error("raised (not again when replayed)", None, exc) from exc

    def process_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        if self._kind == "map":
            return self.process(batch), stamps
        try:
            return self._apply_timed(batch, stamps)
        except UserCodeError:
            try:
                self.process(batch)  # raises RecordFailure naming the record
            except RecordFailure as failure:
                # The records before it do not raise (pure functions): redo them timed.
                prefix = self._apply_timed(batch[: failure.index], stamps[: failure.index])
                failure.stamps = prefix[1]
                raise
            raise

    def _apply_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        fn = self.fn
        if self._kind == "filter":
            keep = list(map(fn, batch))
            return list(compress(batch, keep)), list(compress(stamps, keep))
        out: list[Any] = []
        times: list[int] = []
        for record, stamp in zip(batch, stamps, strict=True):
            made = list(fn(record))
            out.extend(made)
            times.extend([stamp] * len(made))
        return out, times


class KeyedOperator(RuntimeOperator):
    """Base of keyed operators; built-in aggregations keep one value per key in ``state``."""

    def __init__(
        self, spec: OperatorSpec, key_fn: Callable[[Any], Any], backend: KeyedStateBackend
    ) -> None:
        super().__init__(spec)
        self.key_fn = key_fn
        self.backend = backend
        # key -> accumulated value: the live table (memory) or the cache (sqlite).
        self.state: dict[Any, Any] = backend.table("value")

    def keys_of(self, batch: list[Any]) -> list[Any]:
        # A hint of which keys to load: a record whose key cannot be made fails (or
        # becomes a dead letter) when it is processed.
        keys = []
        for record in batch:
            try:
                keys.append(self._key(record))
            except RecordError:
                pass
        return keys

    def _key(self, record: Any) -> Any:
        """The state key of ``record`` (lists become tuples); errors name the record."""
        try:
            key = self.key_fn(record)
        except UserCodeError as exc:
            raise self._error("key_by function raised", record, exc) from exc
        try:
            hash(key)
            return key
        except TypeError:
            pass
        try:
            return canonical_key(key)
        except TypeError as exc:
            raise self._error("key_by function gave an unusable key:", record, exc) from exc


class _Reduce(KeyedOperator):
    def __init__(
        self,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        backend: KeyedStateBackend,
        fn: Callable[[Any, Any], Any],
    ) -> None:
        super().__init__(spec, key_fn, backend)
        self.fn = fn

    def process(self, batch: list[Any]) -> list[Any]:
        state = self.state
        fn = self.fn
        detach = self.backend.detach if self.backend is not None else (lambda v: v)
        # Emit snapshots: a reduce function that mutates and returns its accumulator must
        # not change records already emitted, so each value is encoded as it is made.
        snapshots: list[bytes] = []
        for index, record in enumerate(batch):
            try:
                key = self._key(record)
                if key in state:
                    try:
                        value = fn(detach(state[key]), record)  # fn may mutate its accumulator
                    except UserCodeError as exc:
                        raise self._error("raised", record, exc) from exc
                else:
                    value = record
                try:
                    encoded = _dumps(value)
                except TypeError as exc:
                    raise self._error("produced a value that is not JSON:", value, exc) from exc
            except RecordError as error:
                raise RecordFailure(error, index, _decode_all(snapshots)) from error.__cause__
            state[key] = value
            snapshots.append(encoded)
        return _decode_all(snapshots)


class _Aggregate(KeyedOperator):
    """sum/min/max on a dict field: emits the record with the field set to the running value."""

    def __init__(
        self,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        backend: KeyedStateBackend,
        field_name: str,
        combine: Callable[[Any, Any], Any],
    ) -> None:
        super().__init__(spec, key_fn, backend)
        self.field = field_name
        self.combine = combine

    def process(self, batch: list[Any]) -> list[Any]:
        state = self.state
        field = self.field
        combine = self.combine
        key_fn = self.key_fn
        out: list[Any] = []
        append = out.append
        try:
            for record in batch:
                key = key_fn(record)
                value = record[field]
                current = state.get(key)
                value = value if current is None else combine(current, value)
                state[key] = value
                append({**record, field: value})
        except UserCodeError:
            # Everything before the failing record was applied (state is only written
            # once nothing can raise); go on record by record from there.
            return self._process_slow(batch, out)
        return out

    def _process_slow(self, batch: list[Any], out: list[Any]) -> list[Any]:
        state = self.state
        field = self.field
        for record in batch[len(out) :]:
            try:
                key = self._key(record)
                try:
                    value = record[field]
                    current = state.get(key)
                    value = value if current is None else self.combine(current, value)
                except UserCodeError as exc:
                    if not isinstance(record, dict) or field not in record:
                        raise self._error(
                            f"needs dict records with a {field!r} field, got", record, exc
                        ) from exc
                    raise self._error(f"cannot combine field {field!r}:", record, exc) from exc
            except RecordError as error:
                raise RecordFailure(error, len(out), out) from error.__cause__
            state[key] = value
            out.append({**record, field: value})
        return out


class _Count(KeyedOperator):
    def process(self, batch: list[Any]) -> list[Any]:
        state = self.state
        key_fn = self.key_fn
        out: list[Any] = []
        append = out.append
        try:
            for record in batch:
                key = key_fn(record)
                n = state.get(key, 0) + 1
                state[key] = n
                append({"key": key, "count": n})
        except UserCodeError:
            for record in batch[len(out) :]:
                try:
                    key = self._key(record)
                except RecordError as error:
                    raise RecordFailure(error, len(out), out) from error.__cause__
                n = state.get(key, 0) + 1
                state[key] = n
                append({"key": self.key_fn(record), "count": n})  # the key as the user made it
        return out


def _add(a: Any, b: Any) -> Any:
    return a + b


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
    kind = definition.kind
    fn = definition.fn
    if kind in _Stateless._APPLY:
        assert fn is not None
        return _Stateless(spec, fn)
    if kind == "process":
        from mesh.node.process import ProcessOperator

        return ProcessOperator.build(spec, fn, subtask_index, parallelism)
    key_fn = definition.key_fn
    if key_fn is None:
        raise GraphError(f"operator {spec.uid!r} ({kind}) needs a keyed stream")
    state = backend()
    if kind == "keyed_process":
        from mesh.node.process import KeyedProcessOperator

        return KeyedProcessOperator.build(spec, key_fn, state, fn, subtask_index, parallelism)
    if kind == "window":
        from mesh.node.windowing import WindowOperator

        return WindowOperator(spec, key_fn, state, definition.window)
    if kind == "reduce":
        assert fn is not None
        return _Reduce(spec, key_fn, state, fn)
    if kind == "count":
        return _Count(spec, key_fn, state)
    if kind in ("sum", "min", "max"):
        assert definition.field_name is not None
        combiners: dict[str, Callable[[Any, Any], Any]] = {"sum": _add, "min": min, "max": max}
        return _Aggregate(spec, key_fn, state, definition.field_name, combiners[kind])
    raise GraphError(f"operator {spec.uid!r}: unknown kind {kind!r}")
