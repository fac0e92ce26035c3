"""Window assignment (pure arithmetic): which windows a timestamp belongs to.

Windows are half-open intervals ``[start, end)`` of milliseconds; a window's last
timestamp is ``end - 1``. Tumbling and sliding windows are aligned to ``offset``
(e.g. a time zone's distance from UTC) and work for negative timestamps too. Session
windows start as ``[ts, ts + gap)`` per record and merge when they overlap or touch, so
records at most ``gap`` apart share a session.
"""

from __future__ import annotations

__all__ = ["merge_sessions", "sliding_starts", "tumbling_start"]


def tumbling_start(timestamp: int, size: int, offset: int = 0) -> int:
    """The start of the tumbling window of ``size`` holding ``timestamp``."""
    return timestamp - (timestamp - offset) % size


def sliding_starts(timestamp: int, size: int, slide: int, offset: int = 0) -> list[int]:
    """The starts of every sliding window (``size``, every ``slide``) holding ``timestamp``,
    latest first."""
    last = timestamp - (timestamp - offset) % slide
    return list(range(last, timestamp - size, -slide))


def merge_sessions(
    sessions: list[tuple[int, int]], start: int, end: int
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Merge ``[start, end)`` into ``sessions``: the merged window and the sessions it
    absorbed (those overlapping or touching it, transitively)."""
    absorbed: list[tuple[int, int]] = []
    lo, hi = start, end
    changed = True
    remaining = list(sessions)
    while changed:
        changed = False
        for session in remaining:
            s, e = session
            if s <= hi and e >= lo:
                absorbed.append(session)
                lo, hi = min(lo, s), max(hi, e)
                changed = True
        remaining = [s for s in remaining if s not in absorbed]
    return (lo, hi), absorbed
