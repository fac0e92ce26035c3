"""Splitting files over source subtasks by byte ranges (pure).

The files matching a source's pattern, in sorted order, are treated as one long byte
sequence and cut into ``parallelism`` contiguous ranges of (nearly) equal size, so one big
file is read in parallel as well as many small ones. Every subtask computes the same
plan from the same file list — which assumes the files do not change while the job
starts (bounded sources read files that are complete).

A line belongs to the range holding its first byte. A reader whose range starts inside a
line skips to the next line; a reader keeps reading past its range's end to finish the
line it is in. Every line is therefore read exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FileRange", "plan_splits"]


@dataclass(frozen=True, slots=True)
class FileRange:
    """Bytes ``start`` (inclusive) to ``end`` (exclusive) of one file."""

    path: str
    start: int
    end: int


def plan_splits(files: list[tuple[str, int]], parallelism: int, subtask: int) -> list[FileRange]:
    """The ranges subtask ``subtask`` of ``parallelism`` reads, given ``(path, size)`` pairs."""
    total = sum(size for _, size in files)
    lo = total * subtask // parallelism
    hi = total * (subtask + 1) // parallelism
    ranges = []
    offset = 0
    for path, size in files:
        start, end = max(lo, offset), min(hi, offset + size)
        if start < end:
            ranges.append(FileRange(path, start - offset, end - offset))
        offset += size
    return ranges
