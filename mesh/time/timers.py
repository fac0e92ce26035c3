"""Timers of one keyed operator subtask, in one time domain (event or processing time).

A timer is a (key, timestamp) pair, set at most once: setting it again is a no-op. The
timers of each key are kept in a state table (key → sorted list of timestamps) owned by
the operator's keyed state backend, so they are part of every checkpoint and move with
their key groups on rescaling; a heap of (timestamp, key) finds the ones that are due.
The heap may hold entries whose timer was deleted: ``claim`` tells a live timer from a
stale entry, and removes the timer from the table as it fires.

Pure: the caller says what time it is, and loads a key's state before claiming its
timers (the table then holds that key's entry).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["TimerQueue"]


class TimerQueue:
    """Deduplicated (key, timestamp) timers over a state table, due in timestamp order."""

    def __init__(self, table: dict[Any, list[int]]) -> None:
        # key -> the key's timer timestamps, ascending. Lists are replaced, never changed
        # in place: a snapshot being written may still hold the old one.
        self.table = table
        self._heap: list[tuple[int, int, Hashable]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def register(self, key: Hashable, timestamp: int) -> bool:
        """Set a timer; False if the key already had one at ``timestamp``."""
        current = self.table.get(key)
        if current is None:
            self.table[key] = [timestamp]
        elif timestamp in current:
            return False
        else:
            self.table[key] = sorted([*current, timestamp])
        heapq.heappush(self._heap, (timestamp, next(self._order), key))
        return True

    def delete(self, key: Hashable, timestamp: int) -> None:
        """Remove a timer (no error if there is none)."""
        current = self.table.get(key)
        if current is not None and timestamp in current:
            rest = [t for t in current if t != timestamp]
            if rest:
                self.table[key] = rest
            else:
                del self.table[key]

    def next_time(self) -> int | None:
        """The earliest timestamp in the heap (its timer may have been deleted)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until: int, limit: int = 100_000) -> list[tuple[int, Hashable]]:
        """Heap entries with a timestamp at or below ``until``, earliest first (at most
        ``limit``). Each may be stale: fire it only if ``claim`` says so."""
        heap = self._heap
        due: list[tuple[int, Hashable]] = []
        while heap and heap[0][0] <= until and len(due) < limit:
            timestamp, _, key = heapq.heappop(heap)
            due.append((timestamp, key))
        return due

    def claim(self, key: Hashable, timestamp: int) -> bool:
        """Whether the timer (key, timestamp) is set; if so it is removed (it fires now)."""
        current = self.table.get(key)
        if current is None or timestamp not in current:
            return False
        self.delete(key, timestamp)
        return True

    def rebuild(self, entries: Iterable[tuple[Hashable, Any]]) -> int:
        """Refill the heap from restored (key, timestamps) entries; returns how many."""
        self._heap = []
        count = 0
        for key, timestamps in entries:
            for timestamp in timestamps:
                self._heap.append((int(timestamp), next(self._order), key))
                count += 1
        heapq.heapify(self._heap)
        return count
