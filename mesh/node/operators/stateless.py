"""Stateless operators: map, filter and flat_map over whole batches."""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress
from typing import Any

from mesh.graph.logical import OperatorKind, OperatorSpec
from mesh.node.operators.base import Output, RuntimeOperator
from mesh.node.operators.records import RecordFailure, UserCodeError

__all__ = ["StatelessOperator"]


def _flat_map(fn: Callable[[Any], Any], batch: list[Any]) -> list[Any]:
    return [out for record in batch for out in fn(record)]


class StatelessOperator(RuntimeOperator):
    """map, filter and flat_map: one user function applied to a whole batch at once."""

    _APPLY: dict[OperatorKind, Callable[[Callable[[Any], Any], list[Any]], list[Any]]] = {
        OperatorKind.MAP: lambda fn, batch: list(map(fn, batch)),
        OperatorKind.FILTER: lambda fn, batch: list(filter(fn, batch)),
        OperatorKind.FLAT_MAP: _flat_map,
    }

    #: The operator kinds it runs.
    KINDS = frozenset(_APPLY)

    def __init__(self, spec: OperatorSpec, fn: Callable[[Any], Any]) -> None:
        super().__init__(spec)
        self.fn = fn
        self._kind = OperatorKind(spec.kind)
        self._apply = self._APPLY[spec.kind]
        # What to replay per record to find the one that fails (flat_map: exhaust it).
        self._probe: Callable[[Any], Any] = (
            (lambda record: list(fn(record))) if self._kind is OperatorKind.FLAT_MAP else fn
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
        if self._kind is OperatorKind.MAP:
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
        if self._kind is OperatorKind.FILTER:
            keep = list(map(fn, batch))
            return list(compress(batch, keep)), list(compress(stamps, keep))
        out: list[Any] = []
        times: list[int] = []
        for record, stamp in zip(batch, stamps, strict=True):
            made = list(fn(record))
            out.extend(made)
            times.extend([stamp] * len(made))
        return out, times
