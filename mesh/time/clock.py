"""Clocks: the only place mesh reads "now".

Every component that needs processing time, a timeout or a timer takes a ``Clock``.
``SystemClock`` reads the machine; ``ManualClock`` only moves when a test advances it, so
no test sleeps to wait for time. Both report milliseconds.

``now_ms()`` is wall-clock time (epoch ms, for processing-time semantics and for humans);
``monotonic_ms()`` never goes backwards and is what deadlines and intervals use.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import anyio

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Where time comes from."""

    def now_ms(self) -> int:
        """Wall-clock time in epoch milliseconds."""
        ...

    def monotonic_ms(self) -> float:
        """A time in milliseconds that never goes backwards (for deadlines)."""
        ...

    async def sleep_ms(self, ms: float) -> None:
        """Wait ``ms`` milliseconds of this clock's time."""
        ...


class SystemClock:
    """The machine's clock. Wall time is made monotonic so "now" never moves backwards."""

    def __init__(self) -> None:
        # The largest wall time handed out so far: NTP steps must not move time back.
        self._last_wall = 0

    def now_ms(self) -> int:
        now = int(time.time() * 1000)
        if now < self._last_wall:
            return self._last_wall
        self._last_wall = now
        return now

    def monotonic_ms(self) -> float:
        return time.monotonic() * 1000.0

    async def sleep_ms(self, ms: float) -> None:
        await anyio.sleep(max(ms, 0.0) / 1000.0)


class ManualClock:
    """A clock that only moves when told to; sleepers wake when it passes their deadline."""

    def __init__(self, start_ms: int = 0) -> None:
        # Current time in ms; only ``advance``/``set`` change it, never backwards.
        self._now = start_ms
        # Sleepers waiting for the clock to reach a deadline: (deadline, event).
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> float:
        return float(self._now)

    async def sleep_ms(self, ms: float) -> None:
        if ms <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._sleepers.append((self._now + ms, event))
        await event.wait()

    def advance(self, ms: float) -> None:
        """Move time forward by ``ms`` and wake every sleeper whose deadline passed."""
        if ms < 0 or math.isnan(ms):
            raise ValueError(f"ManualClock.advance: ms must be >= 0, got {ms!r}")
        self.set(self._now + int(ms))

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms`` (never backwards)."""
        if now_ms < self._now:
            raise ValueError(f"ManualClock.set: time cannot go backwards ({now_ms} < {self._now})")
        self._now = now_ms
        due = [s for s in self._sleepers if s[0] <= now_ms]
        self._sleepers = [s for s in self._sleepers if s[0] > now_ms]
        for _, event in due:
            event.set()
