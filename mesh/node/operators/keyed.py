"""Built-in keyed aggregations: reduce, count, sum/min/max on a field, and ``Aggregate``.

Each keeps one value per key in the operator's ``state`` table. By default it emits the
running value for every record; with ``emit="final"`` (``emit_final``) it emits nothing
per record, and each key's value once, when the input ends (``finish``): a bounded
job's totals without a window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from mesh.errors import RecordError
from mesh.graph.logical import OperatorKind, OperatorSpec
from mesh.node.operators.base import KeyedOperator
from mesh.node.operators.records import RecordFailure, UserCodeError
from mesh.state.backends import KeyedStateBackend

__all__ = [
    "COMBINERS",
    "AggregateOperator",
    "CountOperator",
    "KeyedAggregateOperator",
    "ReduceOperator",
]

_dumps = orjson.dumps
_loads = orjson.loads


def _decode_all(encoded: list[bytes]) -> list[Any]:
    return _loads(b"[" + b",".join(encoded) + b"]") if encoded else []


class ReduceOperator(KeyedOperator):
    """reduce: the user's function folds each record into its key's value."""

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
        if self.combined:
            return self._merge_partials(batch, self.fn)
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
        return [] if self.emit_final else _decode_all(snapshots)

    async def finish(self) -> list[Any]:
        if not self.emit_final:
            return []
        return [value for _, value in await self._final_values()]


class AggregateOperator(KeyedOperator):
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
        if self.combined:
            return self._merge_partials(batch, self._merge_records)
        if self.emit_final:
            return self._process_final(batch)
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
            return self._resume_per_record(batch, out, self._combine_one)
        return out

    def _merge_records(self, current: Any, partial: Any) -> Any:
        field = self.field
        return {**partial, field: self.combine(current[field], partial[field])}

    def _process_final(self, batch: list[Any]) -> list[Any]:
        # The state holds each key's last record, with the field's value so far.
        state = self.state
        field = self.field
        for index, record in enumerate(batch):
            try:
                key = self._key(record)
                current = state.get(key)
                value = self._combined(record, None if current is None else current[field])
            except RecordError as error:
                raise RecordFailure(error, index, []) from error.__cause__
            state[key] = {**record, field: value}
        return []

    async def finish(self) -> list[Any]:
        if not self.emit_final:
            return []
        return [record for _, record in await self._final_values()]

    def _combine_one(self, record: Any) -> tuple[Any, Any, Any]:
        key = self._key(record)
        value = self._combined(record, self.state.get(key))
        return key, value, {**record, self.field: value}

    def _combined(self, record: Any, current: Any) -> Any:
        """``record``'s field combined with the key's ``current`` value (None: none yet)."""
        field = self.field
        try:
            value = record[field]
            return value if current is None else self.combine(current, value)
        except UserCodeError as exc:
            if not isinstance(record, dict) or field not in record:
                raise self._error(
                    f"needs dict records with a {field!r} field, got", record, exc
                ) from exc
            raise self._error(f"cannot combine field {field!r}:", record, exc) from exc


class CountOperator(KeyedOperator):
    """count: emits ``{"key": key, "count": n}`` for each record."""

    def process(self, batch: list[Any]) -> list[Any]:
        state = self.state
        key_fn = self.key_fn
        out: list[Any] = []
        append = out.append
        if self.combined:
            return self._merge_partials(batch, _add)
        if self.emit_final:
            return self._count_final(batch)
        try:
            for record in batch:
                key = key_fn(record)
                n = state.get(key, 0) + 1
                state[key] = n
                append({"key": key, "count": n})
        except UserCodeError:
            return self._resume_per_record(batch, out, self._count_one)
        return out

    def _count_final(self, batch: list[Any]) -> list[Any]:
        state = self.state
        for index, record in enumerate(batch):
            try:
                key = self._key(record)
            except RecordError as error:
                raise RecordFailure(error, index, []) from error.__cause__
            state[key] = state.get(key, 0) + 1
        return []

    async def finish(self) -> list[Any]:
        if not self.emit_final:
            return []
        return [{"key": key, "count": n} for key, n in await self._final_values()]

    def _count_one(self, record: Any) -> tuple[Any, Any, Any]:
        key = self._key(record)
        n = self.state.get(key, 0) + 1
        return key, n, {"key": self.key_fn(record), "count": n}  # the key as the user made it


class KeyedAggregateOperator(KeyedOperator):
    """aggregate: each key's records folded into an ``Aggregate`` accumulator; emits
    ``{"key": k, "value": aggregate.result(acc)}``."""

    def __init__(
        self,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        backend: KeyedStateBackend,
        aggregate: Any,
    ) -> None:
        super().__init__(spec, key_fn, backend)
        self.aggregate = aggregate

    def process(self, batch: list[Any]) -> list[Any]:
        if self.combined:
            return self._merge_partials(batch, self.aggregate.merge)
        state = self.state
        add = self.aggregate.add
        final = self.emit_final
        detach = self.backend.detach if self.backend is not None else (lambda v: v)
        # Emitted values are encoded as they are made: add() may mutate its accumulator,
        # which must not change what was emitted before.
        snapshots: list[bytes] = []
        for index, record in enumerate(batch):
            try:
                key = self._key(record)
                acc = detach(state[key]) if key in state else self._create(record)
                try:
                    acc = add(acc, record)
                except UserCodeError as exc:
                    raise self._error("add() raised", record, exc) from exc
                if not final:
                    snapshots.append(self._encoded(key, acc, record))
            except RecordError as error:
                raise RecordFailure(error, index, _decode_all(snapshots)) from error.__cause__
            state[key] = acc
        return _decode_all(snapshots)

    def _create(self, record: Any) -> Any:
        try:
            return self.aggregate.create()
        except UserCodeError as exc:
            raise self._error("create() raised", record, exc) from exc

    def _result(self, acc: Any, record: Any) -> Any:
        try:
            return self.aggregate.result(acc)
        except UserCodeError as exc:
            raise self._error("result() raised", record, exc) from exc

    def _encoded(self, key: Any, acc: Any, record: Any) -> bytes:
        value = {"key": key, "value": self._result(acc, record)}
        try:
            return _dumps(value)
        except TypeError as exc:
            raise self._error("produced a value that is not JSON:", value, exc) from exc

    async def finish(self) -> list[Any]:
        if not self.emit_final:
            return []
        return _decode_all(
            [self._encoded(key, acc, acc) for key, acc in await self._final_values()]
        )


def _add(a: Any, b: Any) -> Any:
    return a + b


#: The combine function of each field aggregation.
COMBINERS: dict[OperatorKind, Callable[[Any, Any], Any]] = {
    OperatorKind.SUM: _add,
    OperatorKind.MIN: min,
    OperatorKind.MAX: max,
}
