"""Base classes for user functions with a lifecycle: process functions.

Subclass ``ProcessFunction`` (for ``Stream.process``) or ``KeyedProcessFunction`` (for
``KeyedStream.process``) and implement ``process(record, ctx)``: return (or ``yield``)
the records to emit, or return None to emit nothing. A plain function
``fn(record, ctx)`` works too.

``ctx`` gives, in a keyed process function: ``ctx.key`` (the current key), and
``ctx.state`` — named keyed state of the current key, part of every checkpoint:
``value(name, default=None)``, ``list(name)``, ``map(name)``, ``reducing(name, fn)``,
each with an optional ``ttl=`` duration. ``ctx.timestamp`` and ``ctx.watermark`` are
None until event time is configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["KeyedProcessFunction", "ProcessFunction"]


class ProcessFunction:
    """A function over records with ``open``/``close`` hooks."""

    def open(self, ctx: Any) -> None:
        """Called once per subtask before the first record."""

    def process(self, record: Any, ctx: Any) -> Iterable[Any] | None:
        """Handle one record; return or yield what to emit."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(record, ctx)")

    def close(self) -> None:
        """Called once per subtask at the end (also after a failure)."""


class KeyedProcessFunction(ProcessFunction):
    """A process function on a keyed stream: it has ``ctx.key`` and ``ctx.state``."""

    def on_timer(self, timestamp: int, ctx: Any) -> Iterable[Any] | None:
        """Called when a timer set through ``ctx.timers`` fires (event time: not yet)."""
        return None
