"""Per-second rates of a subtask's counters over a short window (pure: the caller gives
the time and the readings).

A metrics reader (the Prometheus endpoint when scraped, the OTLP exporter every
interval) reads the counters; each reading is kept, and a rate is the change from the
newest reading at least ``window_ms`` old (or, early on, the oldest) to now. Several
readers, each at its own pace, share one window without disturbing each other.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Iterable

__all__ = ["RateWindow", "Rates"]

WINDOW_MS = 10_000.0  # rates are over the last 10 s or a little more
MIN_SPAN_MS = 500.0  # no rate from readings closer together than this
RESOLUTION_MS = 100.0  # readings closer to the last kept one are not kept


class RateWindow:
    """Readings of a fixed set of counters and the rates between them."""

    __slots__ = ("_readings", "_window_ms")

    def __init__(self, window_ms: float = WINDOW_MS) -> None:
        self._window_ms = window_ms
        self._readings: deque[tuple[float, tuple[float, ...]]] = deque()

    def rates(self, now_ms: float, counters: tuple[float, ...]) -> tuple[float, ...] | None:
        """Record ``counters`` read at ``now_ms``; their change per second since the base
        reading, or None while the readings span less than half a second."""
        readings = self._readings
        if not readings or now_ms - readings[-1][0] >= RESOLUTION_MS:
            readings.append((now_ms, counters))
        # The base is the newest reading at least a window old; older ones go.
        while len(readings) >= 2 and readings[1][0] <= now_ms - self._window_ms:
            readings.popleft()
        base_ms, base = readings[0]
        span_ms = now_ms - base_ms
        if span_ms < MIN_SPAN_MS:
            return None
        return tuple(
            (now - then) * 1000 / span_ms for now, then in zip(counters, base, strict=True)
        )


class Rates:
    """A ``RateWindow`` per subtask, safe to read from several reader threads."""

    def __init__(self, window_ms: float = WINDOW_MS) -> None:
        self._window_ms = window_ms
        self._windows: dict[Hashable, RateWindow] = {}
        self._lock = threading.Lock()

    def rates(
        self, key: Hashable, now_ms: float, counters: tuple[float, ...]
    ) -> tuple[float, ...] | None:
        """``RateWindow.rates`` of the subtask ``key`` (a window is made on first use)."""
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = RateWindow(self._window_ms)
            return window.rates(now_ms, counters)

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        """Forget the windows of subtasks not in ``keys`` (they ended)."""
        keep = set(keys)
        with self._lock:
            for key in [k for k in self._windows if k not in keep]:
                del self._windows[key]
