"""Timers of a keyed operator subtask, as its runtime uses them.

``KeyedTimerService`` keeps an event-time and a processing-time ``TimerQueue`` over two
tables of the operator's keyed state backend (so timers are checkpointed and restored
with the key's state) and fires the due ones: it loads the keys of the due timers
first (a SQLite backend holds only some keys in memory), calls the operator for each
live timer, and writes the keys back. ``TimerHandle`` is ``ctx.timers`` in a keyed
process function.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from mesh.errors import RecordError
from mesh.state.backends import KeyedStateBackend
from mesh.time.timers import TimerQueue

__all__ = [
    "EVENT_TIME",
    "PROCESSING_TIME",
    "GroupCallback",
    "KeyedTimerService",
    "TimerHandle",
]

EVENT_TIME = "event_time"
PROCESSING_TIME = "processing_time"

#: How many rounds of firing one advance may take (a timer callback can set new timers
#: that are already due; this bounds a callback that keeps doing so).
_MAX_ROUNDS = 1000

#: on_timer(key, timestamp, domain, out, stamps): append what it emits to out/stamps.
TimerCallback = Callable[[Hashable, int, str, list[Any], list[int]], None]
#: on_timers(keys, timestamp, out, stamps): the same for keys whose timers at one time fire.
GroupCallback = Callable[[list[Hashable], int, list[Any], list[int]], None]


class KeyedTimerService:
    """Event-time and processing-time timers of one keyed operator subtask."""

    def __init__(self, backend: KeyedStateBackend) -> None:
        self.backend = backend
        self.event = TimerQueue(backend.table("_timers", EVENT_TIME))
        self.processing = TimerQueue(backend.table("_timers", PROCESSING_TIME))

    async def restore(self) -> None:
        """Rebuild the due-order index from the restored state."""
        self.event.rebuild(await self.backend.scan("_timers", EVENT_TIME))
        self.processing.rebuild(await self.backend.scan("_timers", PROCESSING_TIME))

    def next_processing_time(self) -> int | None:
        """When the earliest processing-time timer is due (None: no timer)."""
        return self.processing.next_time()

    async def fire(
        self, domain: str, until: int, callback: TimerCallback
    ) -> tuple[list[Any], list[int]]:
        """Fire every timer of ``domain`` due at ``until``, earliest first."""
        queue = self.event if domain == EVENT_TIME else self.processing
        backend = self.backend
        out: list[Any] = []
        stamps: list[int] = []
        claim = queue.claim
        for _ in range(_MAX_ROUNDS):
            due = queue.take_due(until)
            if not due:
                break
            if backend.needs_io:
                await backend.before_batch([key for _, keys in due for key in keys])
            for timestamp, keys in due:
                for key in keys:
                    if claim(key, timestamp):
                        callback(key, timestamp, domain, out, stamps)
            if backend.needs_io:
                await backend.after_batch()
        return out, stamps

    async def fire_groups(
        self, domain: str, until: int, callback: GroupCallback
    ) -> tuple[list[Any], list[int]]:
        """``fire``, calling ``callback`` once per timestamp with the keys whose timers
        fire then. Only for a callback that sets no timers: the keys of a timestamp are
        claimed before it runs."""
        queue = self.event if domain == EVENT_TIME else self.processing
        backend = self.backend
        out: list[Any] = []
        stamps: list[int] = []
        # Rounds of at most take_due's limit of keys (what a backend loads at once); the
        # callback sets no timers, so each round leaves fewer.
        due = queue.take_due(until)
        while due:
            if backend.needs_io:
                await backend.before_batch([key for _, keys in due for key in keys])
            for timestamp, keys in due:
                live = queue.claim_all(timestamp, keys)
                if live:
                    callback(live, timestamp, out, stamps)
            if backend.needs_io:
                await backend.after_batch()
            due = queue.take_due(until)
        return out, stamps


def _timestamp(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"ctx.timers.{what}() expects an int of milliseconds, got {value!r}")
    return value


class TimerHandle:
    """``ctx.timers``: set and delete timers of the current key."""

    def __init__(self, service: KeyedTimerService, key_of: Callable[[], Hashable]) -> None:
        self._service = service
        self._key_of = key_of

    def event_time(self, timestamp: int) -> None:
        """Call ``on_timer`` once the watermark reaches ``timestamp`` (set once per key
        and time: setting it again does nothing)."""
        self._service.event.register(self._key_of(), _timestamp(timestamp, "event_time"))

    def processing_time(self, timestamp: int) -> None:
        """Call ``on_timer`` once the clock reaches ``timestamp`` (epoch ms)."""
        self._service.processing.register(self._key_of(), _timestamp(timestamp, "processing_time"))

    def delete_event_time(self, timestamp: int) -> None:
        """Remove an event-time timer of the current key (no error if absent)."""
        self._service.event.delete(self._key_of(), _timestamp(timestamp, "delete_event_time"))

    def delete_processing_time(self, timestamp: int) -> None:
        """Remove a processing-time timer of the current key (no error if absent)."""
        self._service.processing.delete(
            self._key_of(), _timestamp(timestamp, "delete_processing_time")
        )

    def current_processing_time(self) -> int:
        """The clock's time (epoch ms)."""
        return self._service.backend.clock.now_ms()
