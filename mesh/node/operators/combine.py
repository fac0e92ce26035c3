"""Combining before a keyed exchange (batch mode): a producer folds the records it would
send to a final-emitting keyed aggregation into one partial value per key, and sends
only ``[key, partial]`` pairs, at the end of its input; the aggregation then merges the
partials (``KeyedOperator.combined``). A shuffle of a million records becomes one of as
many pairs as there are keys per producer.

It applies to ``count``, ``sum``/``min``/``max``, ``reduce`` (whose function must then
be associative, as a combinable reduce is anywhere) and ``aggregate`` with an
``Aggregate`` that implements ``merge``; ``Job.build`` decides which edges combine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from mesh.errors import RecordError
from mesh.graph.keygroups import canonical_key
from mesh.graph.logical import OperatorKind, OperatorSpec
from mesh.node.operators.records import UserCodeError, describe_record

__all__ = ["Combiner"]


def _hashable(key: Any) -> Any:
    try:
        hash(key)
        return key
    except TypeError:
        return canonical_key(key)


class Combiner:
    """One producer subtask's partial values per key, for one keyed edge."""

    def __init__(
        self,
        consumer: OperatorSpec,
        key_fn: Callable[[Any], Any],
        *,
        fn: Callable[[Any, Any], Any] | None = None,
        field_name: str | None = None,
        aggregate: Any = None,
        combine: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        self.consumer = consumer
        self.kind = consumer.kind
        self._key_fn = key_fn
        self._fn = fn
        self._field = field_name
        self._aggregate = aggregate
        self._combine = combine
        self._partials: dict[Any, Any] = {}

    @property
    def size(self) -> int:
        """Keys held."""
        return len(self._partials)

    def add(self, batch: list[Any]) -> None:
        """Fold ``batch`` in; RecordError names the aggregation and the record when user
        code (or a record without the field) raises."""
        try:
            self._add(batch)
        except UserCodeError as exc:
            spec = self.consumer
            raise RecordError(
                f"operator {spec.uid!r} ({spec.name}), combining before the keyed exchange: "
                f"{type(exc).__name__}: {exc} — on record {self._culprit(batch)}"
            ) from exc

    def _culprit(self, batch: list[Any]) -> str:
        """The first record of ``batch`` that raises on its own (in a scratch combiner:
        this one is failing anyway), for the error message."""
        scratch = Combiner(
            self.consumer,
            self._key_fn,
            fn=self._fn,
            field_name=self._field,
            aggregate=self._aggregate,
            combine=self._combine,
        )
        for record in batch:
            try:
                scratch._add([record])
            except UserCodeError:
                return describe_record(record)
        return "one of a batch of " + str(len(batch))

    def _add(self, batch: list[Any]) -> None:
        partials = self._partials
        key_fn = self._key_fn
        kind = self.kind
        if kind is OperatorKind.COUNT:
            for record in batch:
                key = _hashable(key_fn(record))
                partials[key] = partials.get(key, 0) + 1
        elif kind is OperatorKind.AGGREGATE:
            create, add = self._aggregate.create, self._aggregate.add
            for record in batch:
                key = _hashable(key_fn(record))
                acc = partials.get(key)
                partials[key] = add(create() if acc is None else acc, record)
        elif kind is OperatorKind.REDUCE:
            fn = self._fn
            assert fn is not None
            for record in batch:
                key = _hashable(key_fn(record))
                if key in partials:
                    partials[key] = fn(partials[key], record)
                else:  # a copy: fn may mutate its accumulator, and the record is shared
                    partials[key] = orjson.loads(orjson.dumps(record))
        else:  # sum, min, max: (the key's last record, the field's value so far)
            field, combine = self._field, self._combine
            assert field is not None and combine is not None
            for record in batch:
                key = _hashable(key_fn(record))
                value = record[field]
                current = partials.get(key)
                partials[key] = (
                    record,
                    value if current is None else combine(current[1], value),
                )

    def partials(self) -> list[list[Any]]:
        """``[key, partial]`` per key (then forgets them)."""
        partials, self._partials = self._partials, {}
        if self.kind in (OperatorKind.SUM, OperatorKind.MIN, OperatorKind.MAX):
            field = self._field
            return [[key, {**record, field: value}] for key, (record, value) in partials.items()]
        return [[key, value] for key, value in partials.items()]
