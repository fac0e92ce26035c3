"""Timers of one keyed operator subtask, in one time domain (event or processing time).

A timer is a (key, timestamp) pair, set at most once: setting it again is a no-op. The
timers of each key are kept in a state table (key → sorted list of timestamps) owned by
the operator's keyed state backend, so they are part of every checkpoint and move with
their key groups on rescaling. The due order is kept apart: the keys of each timestamp
in the order their timers were set, and a heap of those timestamps. Windows give many
keys one timestamp, so a timer costs a list append, not a heap entry of its own.
The due order may hold timers that were deleted: ``claim`` tells a live timer from a
stale entry, and removes the timer from the table as it fires.

Pure: the caller says what time it is, and loads a key's state before claiming its
timers (the table then holds that key's entry).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["TimerQueue"]


class TimerQueue:
    """Deduplicated (key, timestamp) timers over a state table, due in timestamp order
    (timers of one timestamp in the order they were set)."""

    def __init__(self, table: dict[Any, list[int]]) -> None:
        # key -> the key's timer timestamps, ascending. Lists are replaced, never changed
        # in place: a snapshot being written may still hold the old one.
        self.table = table
        # timestamp -> keys with a timer then (possibly stale), in the order they were set
        self._keys: dict[int, list[Hashable]] = {}
        self._times: list[int] = []  # heap of the timestamps in _keys
        self._entries = 0

    def __len__(self) -> int:
        return self._entries

    def register(self, key: Hashable, timestamp: int) -> bool:
        """Set a timer; False if the key already had one at ``timestamp``."""
        table = self.table
        current = table.get(key)
        if current is None:
            table[key] = [timestamp]
        elif timestamp in current:
            return False
        elif timestamp > current[-1]:  # the usual case: a later window of the key
            table[key] = [*current, timestamp]
        else:
            table[key] = sorted([*current, timestamp])
        keys = self._keys.get(timestamp)  # _enqueue, inline: once per window and key
        if keys is None:
            self._keys[timestamp] = [key]
            heapq.heappush(self._times, timestamp)
        else:
            keys.append(key)
        self._entries += 1
        return True

    def _enqueue(self, key: Hashable, timestamp: int) -> None:
        keys = self._keys.get(timestamp)
        if keys is None:
            self._keys[timestamp] = [key]
            heapq.heappush(self._times, timestamp)
        else:
            keys.append(key)
        self._entries += 1

    def delete(self, key: Hashable, timestamp: int) -> None:
        """Remove a timer (no error if there is none)."""
        current = self.table.get(key)
        if current is not None and timestamp in current:
            self._remove(key, timestamp, current)

    def _remove(self, key: Hashable, timestamp: int, current: list[int]) -> None:
        if len(current) == 1:
            del self.table[key]
        elif current[0] == timestamp:  # the usual case: timers fire earliest first
            self.table[key] = current[1:]
        else:
            self.table[key] = [t for t in current if t != timestamp]

    def next_time(self) -> int | None:
        """The earliest due timestamp (its timers may have been deleted)."""
        return self._times[0] if self._times else None

    def take_due(self, until: int, limit: int = 100_000) -> list[tuple[int, list[Hashable]]]:
        """The keys with a timer at or below ``until``, grouped by timestamp, earliest
        first (at most ``limit`` keys). Each may be stale: fire it only if ``claim`` says
        so."""
        times, by_time = self._times, self._keys
        due: list[tuple[int, list[Hashable]]] = []
        room = limit
        while times and times[0] <= until and room > 0:
            timestamp = times[0]
            keys = by_time[timestamp]
            if len(keys) > room:  # the rest stay due
                due.append((timestamp, keys[:room]))
                del keys[:room]
                room = 0
                break
            heapq.heappop(times)
            del by_time[timestamp]
            due.append((timestamp, keys))
            room -= len(keys)
        self._entries -= limit - room
        return due

    def pop_due(self, until: int, limit: int = 100_000) -> list[tuple[int, Hashable]]:
        """``take_due`` as (timestamp, key) pairs."""
        return [(ts, key) for ts, keys in self.take_due(until, limit) for key in keys]

    def claim(self, key: Hashable, timestamp: int) -> bool:
        """Whether the timer (key, timestamp) is set; if so it is removed (it fires now)."""
        current = self.table.get(key)
        if current is None or timestamp not in current:
            return False
        self._remove(key, timestamp, current)
        return True

    def claim_all(self, timestamp: int, keys: list[Hashable]) -> list[Hashable]:
        """``claim`` for each of ``keys`` at ``timestamp``: the keys whose timer was set
        (removed now, they fire), in order."""
        table = self.table
        live: list[Hashable] = []
        for key in keys:
            current = table.get(key)
            if current is not None and timestamp in current:
                self._remove(key, timestamp, current)
                live.append(key)
        return live

    def rebuild(self, entries: Iterable[tuple[Hashable, Any]]) -> int:
        """Refill the due order from restored (key, timestamps) entries; returns how
        many."""
        self._keys, self._times, self._entries = {}, [], 0
        for key, timestamps in entries:
            for timestamp in timestamps:
                self._enqueue(key, int(timestamp))
        return self._entries
