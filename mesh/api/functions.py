"""Base classes for user functions with a lifecycle: process functions.

Subclass ``ProcessFunction`` (for ``Stream.process``) or ``KeyedProcessFunction`` (for
``KeyedStream.process``) and implement ``process(record, ctx)``: return (or ``yield``)
the records to emit, or return None to emit nothing. A plain function
``fn(record, ctx)`` works too.

``ctx`` gives, in a keyed process function: ``ctx.key`` (the current key), and
``ctx.state`` — named keyed state of the current key, part of every checkpoint:
``value(name, default=None)``, ``list(name)``, ``map(name)``, ``reducing(name, fn)``,
each with an optional ``ttl=`` duration; ``ctx.timers`` — event-time and processing-time
timers of the current key (``on_timer`` is called when one fires). ``ctx.timestamp`` is
the record's event time and ``ctx.watermark`` the operator's event time (None when the
stream has none); ``ctx.output(tag, value)`` emits to the side output ``tag``.

``Aggregate`` is the incremental function of ``WindowedStream.aggregate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Aggregate", "KeyedProcessFunction", "ProcessFunction"]


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
        """Called when a timer set through ``ctx.timers`` fires; return or yield what to
        emit. ``ctx.key`` is the timer's key, ``ctx.timestamp`` its time and
        ``ctx.time_domain`` ``"event_time"`` or ``"processing_time"``."""
        return None


class Aggregate:
    """An incremental aggregation: one accumulator per window (``window(...).aggregate``)
    or per key (``key_by(...).aggregate``), updated per record.

    ``create()`` makes an empty accumulator, ``add(acc, record)`` returns the updated
    one, ``result(acc)`` the value emitted when the window fires (default: ``acc``).
    ``merge(a, b)`` combines two accumulators; only ``Session`` windows (which merge)
    need it. Accumulators are stored as JSON, like all state.
    """

    def create(self) -> Any:
        """A new, empty accumulator."""
        raise NotImplementedError(f"{type(self).__name__} must implement create()")

    def add(self, acc: Any, record: Any) -> Any:
        """The accumulator with ``record`` added."""
        raise NotImplementedError(f"{type(self).__name__} must implement add(acc, record)")

    def merge(self, a: Any, b: Any) -> Any:
        """One accumulator holding both (Session windows)."""
        raise NotImplementedError(f"{type(self).__name__} must implement merge(a, b)")

    def result(self, acc: Any) -> Any:
        """What is emitted for an accumulator."""
        return acc
