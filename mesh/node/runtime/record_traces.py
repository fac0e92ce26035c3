"""Sampled record traces: which records are traced, and the span of each subtask that
handles one.

A source subtask samples a ``trace_sample`` fraction of the records it reads, with a
geometric gap between samples, so records that are not sampled cost one subtraction per
batch; and at most ``trace_sample_limit`` per second, since a traced record costs its
spans (tens of microseconds each in Python) however fast the job runs. Each sampled
record starts a trace. A subtask that handles a traced record runs
it through its chain as a batch of its own, inside a span named after the chained task;
everything the chain writes meanwhile derives from that record and is marked with the
span's context (``EdgeWriter.tracing``), so the consumer on the far side of the channel
continues the trace, linked to the producer's span. A record held in state (a window's
contents, a running aggregate) ends its trace in the subtask holding it: what a timer
emits later is not traced.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from mesh.telemetry.tracing import Span, linked_span, tracer
from mesh.transport.traced import TraceMark

__all__ = ["RecordSampler", "RecordTraces", "TracedRun", "traced_runs"]

_TRACER = tracer("mesh.node.records")
_NONE: list[int] = []

#: Records ``[start, end)`` of a batch and the trace they continue ({}: a new trace).
TracedRun = tuple[int, int, dict[str, str]]


class RecordSampler:
    """Which of a source's records are sampled: on average ``fraction`` of them, and
    at most ``per_second`` a second (None: no limit), a second's worth at once."""

    def __init__(
        self, fraction: float, rng: random.Random, per_second: float | None = None
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"a sampled fraction must be in (0, 1], got {fraction!r}")
        if per_second is not None and per_second <= 0:
            raise ValueError(f"a sampling limit must be above zero, got {per_second!r}")
        self._rng = rng
        self._log_miss = math.log1p(-fraction) if fraction < 1 else None
        # Records to read until the next sampled one (1: the very next).
        self._until = self._gap()
        self._per_ms = per_second / 1000 if per_second is not None else None
        self._burst = per_second or 0.0
        self._tokens = self._burst  # samples that may be taken now
        self._refilled_ms: float | None = None
        self.skipped = 0  # samples left out by the limit

    def _gap(self) -> int:
        if self._log_miss is None:
            return 1
        return 1 + int(math.log(1.0 - self._rng.random()) / self._log_miss)

    def sampled(self, count: int, now_ms: float = 0.0) -> list[int]:
        """The indexes of the sampled records among the next ``count`` read (at
        ``now_ms`` on a monotonic clock, for the limit)."""
        until = self._until
        if until > count:
            self._until = until - count
            return _NONE
        picks = []
        while until <= count:
            picks.append(until - 1)
            until += self._gap()
        self._until = until - count
        return picks if self._per_ms is None else self._limit(picks, now_ms)

    def _limit(self, picks: list[int], now_ms: float) -> list[int]:
        assert self._per_ms is not None
        if self._refilled_ms is not None:
            elapsed = max(now_ms - self._refilled_ms, 0.0)
            self._tokens = min(self._burst, self._tokens + elapsed * self._per_ms)
        self._refilled_ms = now_ms
        allowed = min(len(picks), int(self._tokens))
        self._tokens -= allowed
        self.skipped += len(picks) - allowed
        return picks[:allowed]


def traced_runs(size: int, marks: Sequence[TraceMark]) -> list[TracedRun]:
    """The runs of a received batch of ``size`` records that its trace ``marks`` cover,
    in order; marks out of range or overlapping an earlier one are left out."""
    runs: list[TracedRun] = []
    done = 0
    for context, start, end in marks:
        end = min(end, size)
        if start >= done and start < end:
            runs.append((start, end, context))
            done = end
    return runs


class RecordTraces:
    """Starts the spans of one subtask's traced records."""

    def __init__(
        self,
        task: str,
        attributes: Mapping[str, Any],
        sampler: RecordSampler | None = None,
    ) -> None:
        self._task = task
        self._attributes = dict(attributes)
        self.sampler = sampler  # None: this subtask starts no traces of its own

    def start(self, context: dict[str, str], records: int, channel: str | None) -> Span:
        """The span of ``records`` records of the trace ``context`` names (read from
        ``channel``), or of a newly sampled record ({} and no channel)."""
        attributes = {**self._attributes, "mesh.records": records}
        if not context:
            return linked_span(_TRACER, self._task, (), attributes)
        return linked_span(_TRACER, self._task, (context,), attributes, {"mesh.channel": channel})
