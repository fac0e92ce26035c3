"""Window assigners: how a keyed stream is cut into windows (``mesh.windows``).

    events.key_by(lambda e: e["user"]).window(windows.Tumbling("10s")).count()

* ``Tumbling(size, offset=0)`` — back-to-back windows of ``size``, aligned to
  ``offset`` (e.g. ``"-5h"`` hours for a time zone): ``[k*size + offset, (k+1)*size + offset)``.
* ``Sliding(size, slide, offset=0)`` — windows of ``size`` starting every ``slide``; a
  record belongs to ``size / slide`` of them.
* ``Session(gap)`` — a window per burst of activity of a key: records at most ``gap``
  apart share a session, which closes ``gap`` after its last record.
* ``Global(trigger)`` — one window per key for all time; ``trigger`` (e.g.
  ``triggers.Count(100)``) says when it emits.

Windows are event-time (the records' timestamps, driven by watermarks) unless
``processing_time=True``: then a record belongs to the windows of the moment it is
processed, and windows fire by the clock. A window is ``[start, end)``: its results
carry ``window_start`` and ``window_end`` in ms.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mesh.api import triggers
from mesh.errors import GraphError
from mesh.time.durations import parse_duration

__all__ = ["Global", "Session", "Sliding", "Tumbling", "Window", "WindowAssigner", "triggers"]


class Window(NamedTuple):
    """One window of a key, as ``WindowedStream.process`` functions see it.

    ``start``/``end`` are ms (``end`` excluded); both are None for a ``Global`` window.
    """

    start: int | None
    end: int | None

    @property
    def max_timestamp(self) -> int | None:
        """The last timestamp inside the window."""
        return None if self.end is None else self.end - 1


def _ms(value: Any, what: str, *, positive: bool = True, signed: bool = False) -> int:
    negative = False
    if signed and isinstance(value, str) and value.strip().startswith("-"):
        value, negative = value.strip()[1:], True
    elif signed and isinstance(value, int) and not isinstance(value, bool) and value < 0:
        value, negative = -value, True
    try:
        ms = parse_duration(value, what=what)
    except ValueError as exc:
        raise GraphError(str(exc)) from None
    if positive and ms <= 0:
        raise GraphError(f"{what} must be above zero, got {value!r}")
    return -ms if negative else ms


class WindowAssigner:
    """Base of the window assigners."""

    kind = "window"
    processing_time = False
    #: Session windows merge; the others never do.
    merging = False
    #: The trigger used when none is given.
    default_trigger: triggers.Trigger | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON summary, for status output."""
        return {"window": self.kind, "processing_time": self.processing_time}

    def _default(self) -> triggers.Trigger:
        return triggers.ProcessingTime() if self.processing_time else triggers.EventTime()


class Tumbling(WindowAssigner):
    """Back-to-back windows of ``size``, aligned to ``offset``."""

    kind = "tumbling"

    def __init__(
        self, size: int | str, offset: int | str = 0, *, processing_time: bool = False
    ) -> None:
        self.size_ms = _ms(size, "Tumbling size")
        self.offset_ms = _ms(offset, "Tumbling offset", positive=False, signed=True) % self.size_ms
        self.processing_time = bool(processing_time)
        self.default_trigger = self._default()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size_ms": self.size_ms, "offset_ms": self.offset_ms}

    def __repr__(self) -> str:
        return f"Tumbling({self.size_ms}, offset={self.offset_ms})"


class Sliding(WindowAssigner):
    """Windows of ``size`` starting every ``slide`` (a record is in size/slide of them)."""

    kind = "sliding"

    def __init__(
        self,
        size: int | str,
        slide: int | str,
        offset: int | str = 0,
        *,
        processing_time: bool = False,
    ) -> None:
        self.size_ms = _ms(size, "Sliding size")
        self.slide_ms = _ms(slide, "Sliding slide")
        if self.slide_ms > self.size_ms:
            raise GraphError(
                f"Sliding slide ({self.slide_ms} ms) must not exceed size ({self.size_ms} ms): "
                "records between windows would be lost"
            )
        self.offset_ms = _ms(offset, "Sliding offset", positive=False, signed=True) % self.slide_ms
        self.processing_time = bool(processing_time)
        self.default_trigger = self._default()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "size_ms": self.size_ms,
            "slide_ms": self.slide_ms,
            "offset_ms": self.offset_ms,
        }

    def __repr__(self) -> str:
        return f"Sliding({self.size_ms}, {self.slide_ms}, offset={self.offset_ms})"


class Session(WindowAssigner):
    """A window per burst of a key's records, closed ``gap`` after the last one."""

    kind = "session"
    merging = True

    def __init__(self, gap: int | str, *, processing_time: bool = False) -> None:
        self.gap_ms = _ms(gap, "Session gap")
        self.processing_time = bool(processing_time)
        self.default_trigger = self._default()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gap_ms": self.gap_ms}

    def __repr__(self) -> str:
        return f"Session({self.gap_ms})"


class Global(WindowAssigner):
    """One window per key for all time; ``trigger`` says when it emits."""

    kind = "global"

    def __init__(self, trigger: triggers.Trigger | None = None) -> None:
        if trigger is not None and not isinstance(trigger, triggers.Trigger):
            raise GraphError(f"Global(trigger=...) expects a mesh.triggers object, got {trigger!r}")
        self.default_trigger = trigger

    def describe(self) -> dict[str, Any]:
        return {"window": self.kind}

    def __repr__(self) -> str:
        return f"Global({self.default_trigger!r})"
