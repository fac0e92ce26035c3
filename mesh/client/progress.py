"""What ``mesh run`` shows of a running job, read off its status (pure: status and the
wall clock in, text and numbers out).

A ``Progress`` holds the facts of one status: state, elapsed time, records in (read by
the sources) and out (written by the sinks) with their current rates, the job's
watermark (the lowest of its subtasks'), the latest checkpoint, and, when every source
is bounded with a known size (files, ``Collection``, ``Generator(count=...)``), the
share of their input read (the status's ``source_progress``, bytes for files) — which
gives an ETA at the pace so far.

Current rates are 0 once the subtasks are done, so the line for a job that ended shows
its average rates over the time it processed instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mesh.time.durations import format_duration
from mesh.time.watermarks import MAX_WATERMARK

__all__ = ["PrintSchedule", "Progress", "progress_line", "progress_of"]


@dataclass(frozen=True, slots=True)
class Progress:
    """One job's progress, as ``mesh run`` shows it."""

    state: str
    ended: bool  # the job reached a final state
    elapsed_ms: int  # since it started
    processing_ms: int  # from its first subtask's start to its end (or now)
    records_in: int
    records_out: int
    in_rate: float  # records/s now, or on average once ended
    out_rate: float
    watermark: int | None  # lowest over the subtasks that have one; MAX_WATERMARK: end
    checkpoint_id: int | None  # the latest completed checkpoint or savepoint
    checkpoint_age_ms: int | None
    fraction: float | None  # share of the bounded sources' input read, 0..1 (None: unknown)

    @property
    def eta_ms(self) -> int | None:
        """Time left to read the rest of the input at the pace so far (None: unknown)."""
        f = self.fraction
        if f is None or f <= 0 or self.ended or not self.processing_ms:
            return None
        return int(self.processing_ms * (1 - min(f, 1.0)) / f)


def progress_of(status: dict[str, Any], now_ms: int) -> Progress:
    """The progress in ``status`` (``mesh status --json``'s form) at wall-clock ``now_ms``."""
    totals = status["totals"]
    ended = bool(status.get("ended_ms"))
    started = status.get("processing_started_ms") or 0
    finished = status.get("processing_finished_ms") or status.get("ended_ms") or now_ms
    processing_ms = max(0, finished - started) if started else 0
    in_rate, out_rate = float(totals["in_rate"]), float(totals["out_rate"])
    if ended:
        seconds = processing_ms / 1000 if processing_ms else status["uptime_ms"] / 1000
        in_rate = totals["records_in"] / seconds if seconds > 0 else 0.0
        out_rate = totals["records_out"] / seconds if seconds > 0 else 0.0
    latest = (status.get("checkpoints") or {}).get("latest")
    return Progress(
        state=status["state"],
        ended=ended,
        elapsed_ms=status["uptime_ms"],
        processing_ms=processing_ms,
        records_in=totals["records_in"],
        records_out=totals["records_out"],
        in_rate=in_rate,
        out_rate=out_rate,
        watermark=_watermark(status),
        checkpoint_id=latest["checkpoint_id"] if latest else None,
        checkpoint_age_ms=max(0, now_ms - latest["ended_ms"]) if latest else None,
        fraction=status.get("source_progress"),
    )


def progress_line(p: Progress) -> str:
    """One line: state, elapsed, records in/out and rates (averages once ended),
    watermark, latest checkpoint, and the share of known input read with its ETA."""
    per = "avg " if p.ended else ""
    parts = [
        f"[{p.state:<10}] {format_duration(p.elapsed_ms):>7}",
        f"in {p.records_in:,} ({per}{p.in_rate:,.0f}/s)",
        f"out {p.records_out:,} ({per}{p.out_rate:,.0f}/s)",
    ]
    if p.watermark is not None:
        parts.append(f"watermark {_event_time(p.watermark)}")
    if p.checkpoint_id is not None and p.checkpoint_age_ms is not None:
        parts.append(f"checkpoint {p.checkpoint_id} {format_duration(p.checkpoint_age_ms)} ago")
    if p.fraction is not None:
        eta = f" eta {format_duration(p.eta_ms)}" if p.eta_ms is not None else ""
        parts.append(f"{p.fraction:.0%}{eta}")
    return "  ".join(parts)


class PrintSchedule:
    """When a plain (not refreshed in place) progress display prints: its first status,
    every ``every_s`` seconds, whenever the state changes, and the final status."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last_at: float | None = None
        self._last_state: str | None = None

    def due(self, state: str, now_s: float, *, final: bool = False) -> bool:
        """Whether to print a status in ``state`` at ``now_s`` (monotonic seconds)."""
        if not (
            final
            or self._last_at is None
            or state != self._last_state
            or now_s - self._last_at >= self.every_s
        ):
            return False
        self._last_at, self._last_state = now_s, state
        return True


def _watermark(status: dict[str, Any]) -> int | None:
    marks = [
        sub["watermark"]
        for task in status["tasks"]
        for sub in task["subtasks"]
        if sub.get("watermark") is not None
    ]
    return min(marks) if marks else None


def _event_time(ms: int) -> str:
    if ms >= MAX_WATERMARK:
        return "end"
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
