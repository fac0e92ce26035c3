"""Durations as users write them: an int of milliseconds, or ``"500ms"``, ``"2s"``, ``"5m"``..."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: int | float | str, *, what: str = "duration") -> int:
    """Return ``value`` as whole milliseconds.

    Raises ValueError naming ``what`` when the value is negative or not a duration.
    """
    prefix = f"{what}: " if what else ""
    expected = f"{prefix}expected a duration like 500ms, 2s, 5m or 1h, got {value!r}"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(expected)
        if value < 0:
            raise ValueError(f"{prefix}must not be negative, got {value!r}")
        return round(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return round(float(match.group(1)) * _UNITS_MS[match.group(2)])
        if value.strip().isdigit():
            return int(value.strip())
    raise ValueError(expected)


def format_duration(ms: int | float) -> str:
    """Render milliseconds for people: ``850ms``, ``12.3s``, ``4m05s``, ``2h10m``."""
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
