"""The node's metrics: per subtask of every job it runs, read from the subtasks' own
counters when the metrics endpoint is scraped (see ``mesh.telemetry.instruments``).

Labels: ``job_id``, ``job_name``, ``task`` (the chained task's name), ``subtask`` (its
index) and ``node``. Time backpressured is a counter of seconds, so
``rate(mesh_subtask_backpressure_time_seconds_total[1m])`` is the share of time a
subtask waited for credit — its backpressure ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mesh.node.runtime.job import JobRuntime
from mesh.protocol.messages import SubtaskMetrics
from mesh.telemetry.instruments import Instrument, Reading

__all__ = ["node_instruments"]

_Row = tuple[dict[str, Any], SubtaskMetrics]


def node_instruments(node_id: str, jobs: Mapping[str, JobRuntime]) -> list[Instrument]:
    """The instruments of a node whose running jobs are ``jobs`` (read, never changed)."""

    def rows() -> Iterator[_Row]:
        for runtime in list(jobs.values()):
            for subtask, runner in list(runtime.runners.items()):
                labels = {
                    "job_id": runtime.job_id,
                    "job_name": runtime.config.name,
                    "task": runtime.task_names.get(subtask, runner.name),
                    "subtask": runner.position.index,
                    "node": node_id,
                }
                yield labels, runtime.metrics_of(subtask)

    def reading(value: Callable[[SubtaskMetrics], float | None]) -> Callable[[], list[Reading]]:
        def read() -> list[Reading]:
            found = []
            for labels, m in rows():
                v = value(m)
                if v is not None:
                    found.append(Reading(v, labels))
            return found

        return read

    return [
        Instrument(
            "mesh.subtask.records_in",
            "records a subtask read (from its source or its input channels)",
            "{record}",
            reading(lambda m: m.records_in),
        ),
        Instrument(
            "mesh.subtask.records_out",
            "records a subtask emitted",
            "{record}",
            reading(lambda m: m.records_out),
        ),
        Instrument(
            "mesh.subtask.backpressure.time",
            "time a subtask waited for output credit (backpressured)",
            "s",
            reading(lambda m: m.backpressure_ms / 1000),
        ),
        Instrument(
            "mesh.subtask.dead_letters",
            "records set aside as dead letters because user code raised on them",
            "{record}",
            reading(lambda m: m.dead_letters),
        ),
        Instrument(
            "mesh.subtask.late_records.dropped",
            "records too late for their windows and dropped",
            "{record}",
            reading(lambda m: m.late_dropped),
        ),
        Instrument(
            "mesh.subtask.watermark.lag",
            "wall-clock time minus the subtask's watermark",
            "s",
            reading(
                lambda m: m.watermark_lag_ms / 1000 if m.watermark_lag_ms is not None else None
            ),
            monotonic=False,
        ),
    ]
