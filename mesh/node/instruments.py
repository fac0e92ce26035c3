"""The node's metrics: per subtask of every job it runs, read from the subtasks' own
counters when a metrics reader collects (see ``mesh.telemetry.instruments``).

Labels: ``job_id``, ``job_name``, ``task`` (the chained task's name), ``subtask`` (its
index) and ``node``. Counters are totals (``rate()`` makes them per second); the
``.rate`` gauges and the backpressure ratio are the same over the last 10 s or so
(``mesh.node.runtime.rates``), for backends that do not compute rates. Time backpressured is a
counter of seconds, so ``rate(mesh_subtask_backpressure_time_seconds_total[1m])`` is the
share of time a subtask waited for credit, as is ``mesh_subtask_backpressure_ratio``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh.node.runtime.rates import Rates
from mesh.protocol.messages import SubtaskMetrics
from mesh.telemetry.instruments import Instrument, Reading
from mesh.time.clock import Clock

if TYPE_CHECKING:
    from mesh.node.runtime.job import JobRuntime

__all__ = ["node_instruments"]


@dataclass(frozen=True, slots=True)
class _Row:
    labels: dict[str, Any]
    metrics: SubtaskMetrics
    # Per second over the window: records in, records out, backpressured ms (None
    # until there are two readings far enough apart).
    rates: tuple[float, ...] | None


def node_instruments(
    node_id: str, jobs: Mapping[str, JobRuntime], clock: Clock
) -> list[Instrument]:
    """The instruments of a node whose running jobs are ``jobs`` (read, never changed)."""
    windows = Rates()

    def rows() -> list[_Row]:
        found = []
        keys = []
        now = clock.monotonic_ms()
        for runtime in list(jobs.values()):
            for subtask, runner in list(runtime.runners.items()):
                labels = {
                    "job_id": runtime.job_id,
                    "job_name": runtime.config.name,
                    "task": runtime.task_names.get(subtask, runner.name),
                    "subtask": runner.position.index,
                    "node": node_id,
                }
                m = runtime.metrics_of(subtask)
                counters = (m.records_in, m.records_out, m.backpressure_ms)
                key = (runtime.job_id, runtime.attempt, subtask)
                keys.append(key)
                found.append(_Row(labels, m, windows.rates(key, now, counters)))
        windows.keep_only(keys)
        return found

    def reading(value: Callable[[_Row], float | None]) -> Callable[[], list[Reading]]:
        def read() -> list[Reading]:
            found = []
            for row in rows():
                v = value(row)
                if v is not None:
                    found.append(Reading(v, row.labels))
            return found

        return read

    def rate(index: int) -> Callable[[_Row], float | None]:
        return lambda row: row.rates[index] if row.rates is not None else None

    return [
        Instrument(
            "mesh.subtask.records_in",
            "records a subtask read (from its source or its input channels)",
            "{record}",
            reading(lambda row: row.metrics.records_in),
        ),
        Instrument(
            "mesh.subtask.records_out",
            "records a subtask emitted",
            "{record}",
            reading(lambda row: row.metrics.records_out),
        ),
        Instrument(
            "mesh.subtask.records_in.rate",
            "records a subtask read per second, over the last 10 s",
            "{record}/s",
            reading(rate(0)),
            monotonic=False,
        ),
        Instrument(
            "mesh.subtask.records_out.rate",
            "records a subtask emitted per second, over the last 10 s",
            "{record}/s",
            reading(rate(1)),
            monotonic=False,
        ),
        Instrument(
            "mesh.subtask.backpressure.time",
            "time a subtask waited for output credit (backpressured)",
            "s",
            reading(lambda row: row.metrics.backpressure_ms / 1000),
        ),
        Instrument(
            "mesh.subtask.backpressure.ratio",
            "share of the last 10 s a subtask waited for output credit",
            "1",
            reading(lambda row: min(1.0, row.rates[2] / 1000) if row.rates is not None else None),
            monotonic=False,
        ),
        Instrument(
            "mesh.subtask.input_buffer.utilization",
            "share of a subtask's input buffers holding data it has not read yet",
            "1",
            reading(lambda row: row.metrics.input_fill),
            monotonic=False,
        ),
        Instrument(
            "mesh.subtask.dead_letters",
            "records set aside as dead letters because user code raised on them",
            "{record}",
            reading(lambda row: row.metrics.dead_letters),
        ),
        Instrument(
            "mesh.subtask.late_records.dropped",
            "records too late for their windows and dropped",
            "{record}",
            reading(lambda row: row.metrics.late_dropped),
        ),
        Instrument(
            "mesh.subtask.watermark",
            "the subtask's watermark (event time), in milliseconds since the epoch",
            "ms",
            reading(
                lambda row: (
                    row.metrics.watermark if row.metrics.watermark_lag_ms is not None else None
                )
            ),
            monotonic=False,
        ),
        Instrument(
            "mesh.subtask.watermark.lag",
            "wall-clock time minus the subtask's watermark",
            "s",
            reading(
                lambda row: (
                    row.metrics.watermark_lag_ms / 1000
                    if row.metrics.watermark_lag_ms is not None
                    else None
                )
            ),
            monotonic=False,
        ),
    ]
