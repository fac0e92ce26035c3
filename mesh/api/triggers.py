"""Window triggers: when a window emits its result.

* ``EventTime()`` — the default of event-time windows: the window fires once the
  watermark passes its end; a late record within ``allowed_lateness`` fires it again.
* ``ProcessingTime(every=None)`` — the default of processing-time windows (fires when
  the clock passes the window's end). With ``every``, the window also fires every
  ``every`` of processing time while new records arrive (early results), and once more
  at its end.
* ``Count(n)`` — fires (and starts over) after every ``n`` records of a window; what is
  left fires at the window's end — for ``Global()`` windows, at the end of input.

Whatever the trigger, a window that got records since it last fired fires at its end,
so a bounded job emits every window, as a batch computation would.
"""

from __future__ import annotations

from typing import Any

from mesh.errors import GraphError
from mesh.time.durations import parse_duration

__all__ = ["Count", "EventTime", "ProcessingTime", "Trigger"]


class Trigger:
    """Base of the triggers."""

    kind = "trigger"

    def describe(self) -> dict[str, Any]:
        """A JSON summary, for status output."""
        return {"trigger": self.kind}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EventTime(Trigger):
    """Fire when the watermark passes the window's end."""

    kind = "event_time"


class ProcessingTime(Trigger):
    """Fire at the window's end by the clock; with ``every``, also every ``every``."""

    kind = "processing_time"

    def __init__(self, every: int | str | None = None) -> None:
        self.every_ms: int | None = None
        if every is not None:
            try:
                self.every_ms = parse_duration(every, what="triggers.ProcessingTime every")
            except ValueError as exc:
                raise GraphError(str(exc)) from None
            if self.every_ms <= 0:
                raise GraphError(f"triggers.ProcessingTime every must be above zero, got {every!r}")

    def describe(self) -> dict[str, Any]:
        return {"trigger": self.kind, "every_ms": self.every_ms}

    def __repr__(self) -> str:
        return f"ProcessingTime(every={self.every_ms})"


class Count(Trigger):
    """Fire after every ``n`` records of a window (and start counting again)."""

    kind = "count"

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GraphError(f"triggers.Count(n): n must be a positive int, got {n!r}")
        self.n = n

    def describe(self) -> dict[str, Any]:
        return {"trigger": self.kind, "n": self.n}

    def __repr__(self) -> str:
        return f"Count({self.n})"
