"""Restart strategies, as the coordinator applies them (pure: time comes in as numbers).

``RestartTracker.on_failure(now)`` answers each failure of a job with the delay before
the restart, or None when the strategy gives up (the job fails). Strategies follow
Flink's: fixed delay (a number of attempts), exponential delay (never gives up; the
delay grows after each failure and starts over after a long enough quiet run), failure
rate (gives up when too many failures fall within an interval), none.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["RestartTracker"]


class RestartTracker:
    """The restart decisions for one job (kept across its attempts)."""

    def __init__(self, strategy: dict[str, Any]) -> None:
        self.strategy = dict(strategy)
        self.kind = str(strategy.get("kind", "none"))
        self.restarts = 0  # restarts granted so far
        self._failures: deque[float] = deque()  # failure_rate: recent failure times
        self._backoff: float | None = None  # exponential: the delay given last
        self._last_failure_ms: float | None = None

    def on_failure(self, now_ms: float) -> int | None:
        """A failure at ``now_ms``: the delay (ms) before restarting, or None to give up."""
        s = self.strategy
        last, self._last_failure_ms = self._last_failure_ms, now_ms
        delay: float | None
        if self.kind == "fixed_delay":
            delay = s["delay_ms"] if self.restarts < s["attempts"] else None
        elif self.kind == "failure_rate":
            self._failures.append(now_ms)
            while self._failures and self._failures[0] <= now_ms - s["interval_ms"]:
                self._failures.popleft()
            delay = s["delay_ms"] if len(self._failures) <= s["max_failures"] else None
        elif self.kind == "exponential":
            quiet = last is not None and now_ms - last >= s["reset_after_ms"]
            if self._backoff is None or quiet:
                self._backoff = float(s["initial_ms"])
            else:
                self._backoff = min(self._backoff * s["multiplier"], float(s["max_ms"]))
            delay = self._backoff
        else:
            delay = None
        if delay is None:
            return None
        self.restarts += 1
        return round(delay)

    def describe(self) -> str:
        """For messages: ``fixed_delay(attempts=3, delay_ms=1000)``."""
        args = ", ".join(f"{k}={v:g}" for k, v in self.strategy.items() if k != "kind")
        return f"{self.kind}({args})"

    def gave_up(self) -> str:
        """Why the strategy gave up, for the job's error."""
        s = self.strategy
        if self.kind == "fixed_delay":
            return f"restart strategy {self.describe()}: all {s['attempts']:g} restarts used"
        if self.kind == "failure_rate":
            return (
                f"restart strategy {self.describe()}: more than {s['max_failures']:g} failures "
                f"within {s['interval_ms']:g} ms"
            )
        return "restart strategy none: the job does not restart"
