"""Runtime operators: what runs inside a chain, one batch at a time.

Each operator turns a list of records into a list of records with plain loops and
comprehensions — no per-record ``await`` — which is what makes a chain of Python
functions fast. When user code raises, the batch is replayed record by record to name
the record at fault (user functions should be free of side effects, as in any stream
processor that replays after failures).

Keyed operators keep their state in a dict per subtask for now; checkpointed state
backends replace it later without changing the operators' shape.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from mesh.api.job import OperatorDef
from mesh.errors import GraphError, RecordError
from mesh.graph.keygroups import canonical_key
from mesh.graph.logical import OperatorSpec

__all__ = [
    "RuntimeOperator",
    "UserCodeError",
    "build_operator",
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


def describe_record(record: Any) -> str:
    """A short, safe rendering of a record for error messages."""
    try:
        return _repr.repr(record)
    except UserCodeError:
        return f"<{type(record).__name__}>"


class RuntimeOperator:
    """One operator of a chain."""

    def __init__(self, spec: OperatorSpec) -> None:
        self.spec = spec

    def _error(self, what: str, record: Any, exc: BaseException) -> RecordError:
        return RecordError(
            f"operator {self.spec.uid!r} ({self.spec.name}) {what} "
            f"{type(exc).__name__}: {exc} — on record {describe_record(record)}"
        )

    def _find_failure(self, fn: Callable[[Any], Any], batch: list[Any], what: str) -> None:
        found = first_failure(fn, batch)
        if found is not None:
            record, exc = found
            raise self._error(what, record, exc) from exc

    def open(self) -> None:
        """Called once before the first record."""

    def process(self, batch: list[Any]) -> list[Any]:
        """Records in, records out."""
        raise NotImplementedError

    def finish(self) -> list[Any]:
        """End of input: records still to emit."""
        return []

    def close(self) -> None:
        """Called once at the end, also after a failure or cancellation."""


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
        self._apply = self._APPLY[spec.kind]
        # What to replay per record to find the one that fails (flat_map: exhaust it).
        self._probe: Callable[[Any], Any] = (
            (lambda record: list(fn(record))) if spec.kind == "flat_map" else fn
        )

    def process(self, batch: list[Any]) -> list[Any]:
        try:
            return self._apply(self.fn, batch)
        except UserCodeError:
            self._find_failure(self._probe, batch, "raised")
            raise


class _Keyed(RuntimeOperator):
    """Base of running keyed aggregations; state maps key → accumulated value."""

    def __init__(self, spec: OperatorSpec, key_fn: Callable[[Any], Any]) -> None:
        super().__init__(spec)
        self.key_fn = key_fn
        self.state: dict[Any, Any] = {}

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


class _Reduce(_Keyed):
    def __init__(
        self, spec: OperatorSpec, key_fn: Callable[[Any], Any], fn: Callable[[Any, Any], Any]
    ) -> None:
        super().__init__(spec, key_fn)
        self.fn = fn

    def process(self, batch: list[Any]) -> list[Any]:
        state = self.state
        fn = self.fn
        # Emit snapshots: a reduce function that mutates and returns its accumulator must
        # not change records already emitted, so each value is encoded as it is made.
        snapshots = []
        for record in batch:
            key = self._key(record)
            if key in state:
                try:
                    value = fn(state[key], record)
                except UserCodeError as exc:
                    raise self._error("raised", record, exc) from exc
            else:
                value = record
            state[key] = value
            try:
                snapshots.append(_dumps(value))
            except TypeError as exc:
                raise self._error("produced a value that is not JSON:", value, exc) from None
        return _loads(b"[" + b",".join(snapshots) + b"]") if snapshots else []


class _Aggregate(_Keyed):
    """sum/min/max on a dict field: emits the record with the field set to the running value."""

    def __init__(
        self,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        field_name: str,
        combine: Callable[[Any, Any], Any],
    ) -> None:
        super().__init__(spec, key_fn)
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
            state[key] = value
            out.append({**record, field: value})
        return out


class _Count(_Keyed):
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
                key = self._key(record)
                n = state.get(key, 0) + 1
                state[key] = n
                append({"key": self.key_fn(record), "count": n})  # the key as the user made it
        return out


def _add(a: Any, b: Any) -> Any:
    return a + b


def build_operator(spec: OperatorSpec, definition: OperatorDef) -> RuntimeOperator:
    """The runtime operator for one definition (sources and sinks are built elsewhere)."""
    kind = definition.kind
    fn = definition.fn
    if kind in _Stateless._APPLY:
        assert fn is not None
        return _Stateless(spec, fn)
    key_fn = definition.key_fn
    if key_fn is None:
        raise GraphError(f"operator {spec.uid!r} ({kind}) needs a keyed stream")
    if kind == "reduce":
        assert fn is not None
        return _Reduce(spec, key_fn, fn)
    if kind == "count":
        return _Count(spec, key_fn)
    if kind in ("sum", "min", "max"):
        assert definition.field_name is not None
        combiners: dict[str, Callable[[Any, Any], Any]] = {"sum": _add, "min": min, "max": max}
        combine = combiners[kind]
        return _Aggregate(spec, key_fn, definition.field_name, combine)
    raise GraphError(f"operator {spec.uid!r}: unknown kind {kind!r}")
