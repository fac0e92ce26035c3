"""What clients see of a job (``mesh status``): built from the coordinator's records,
which hold no presentation of their own."""

from __future__ import annotations

from typing import Any

from mesh.coordinator.bottleneck import find_bottleneck
from mesh.coordinator.jobs import JobRecord, SubtaskRate
from mesh.coordinator.scheduler import natural_key, slots_needed
from mesh.graph.execution import ExecutionGraph, SubtaskRef
from mesh.graph.logical import OperatorKind
from mesh.protocol.states import JobState

__all__ = ["end_tasks", "job_status"]


def end_tasks(graph: ExecutionGraph) -> tuple[set[int], set[int]]:
    """The tasks that start with a source and those that end with a sink: what counts as
    a job's records in and out."""
    logical = graph.logical
    tasks = graph.job.tasks
    return (
        {t.id for t in tasks if logical.operator(t.head).kind is OperatorKind.SOURCE},
        {t.id for t in tasks if logical.operator(t.tail).kind is OperatorKind.SINK},
    )


def job_status(job: JobRecord, now_ms: int) -> dict[str, Any]:
    """Everything ``mesh status`` shows of ``job``, as JSON-ready data."""
    eg = job.graph
    logical = eg.logical
    placement = {a.subtask: a for a in job.assignments}
    source_tasks, sink_tasks = end_tasks(eg)
    totals: dict[str, float] = {
        "records_in": 0,
        "records_out": 0,
        "in_rate": 0.0,
        "out_rate": 0.0,
    }
    tasks = []
    for task in eg.job.tasks:
        subtasks = []
        for index in range(task.parallelism):
            key = str(SubtaskRef(task.id, index))
            m = job.metrics.get(key)
            r = job.rates.get(key, SubtaskRate())
            a = placement.get(key)
            entry: dict[str, Any] = {
                "subtask": key,
                "index": index,
                "node": a.node_id if a else None,
                "slot": a.slot if a else None,
                "state": m.state if m else "SCHEDULED",
                "records_in": m.records_in if m else 0,
                "records_out": m.records_out if m else 0,
                "in_rate": round(r.in_rate, 1),
                "out_rate": round(r.out_rate, 1),
                "backpressure_ms": m.backpressure_ms if m else 0.0,
                "backpressure_ratio": round(r.backpressure_ratio, 3),
                "input_fill": m.input_fill if m else None,
                "dead_letters": m.dead_letters if m else 0,
                "watermark": m.watermark if m else None,
                "watermark_lag_ms": m.watermark_lag_ms if m else None,
                "late_records": m.late_records if m else 0,
                "late_dropped": m.late_dropped if m else 0,
                "started_ms": m.started_ms if m else 0,
                "finished_ms": m.finished_ms if m else 0,
                "source_done": m.source_done if m else None,
                "source_total": m.source_total if m else None,
            }
            subtasks.append(entry)
            if task.id in source_tasks:
                totals["records_in"] += entry["records_in"]
                totals["in_rate"] += entry["in_rate"]
            if task.id in sink_tasks:
                totals["records_out"] += entry["records_out"]
                totals["out_rate"] += entry["out_rate"]
        tasks.append(
            {
                "id": task.id,
                "name": task.name,
                "parallelism": task.parallelism,
                "slot_sharing_group": task.slot_sharing_group,
                "operators": [
                    {
                        "uid": logical.operator(o).uid,
                        "name": logical.operator(o).name,
                        "kind": logical.operator(o).kind,
                        **logical.operator(o).description,
                    }
                    for o in task.operators
                ],
                "subtasks": subtasks,
            }
        )
    edges = [
        {
            "source": e.source_task,
            "target": e.target_task,
            "partitioning": e.partitioning.value,
        }
        for e in eg.job.edges
    ]
    needed = slots_needed(eg)
    started = [m.started_ms for m in job.metrics.values() if m.started_ms]
    finished = [m.finished_ms for m in job.metrics.values() if m.finished_ms]
    end = job.ended_ms or now_ms
    return {
        "job_id": job.job_id,
        "name": job.name,
        "state": job.state.value,
        "attempt": job.attempt,
        "created_ms": job.created_ms,
        "started_ms": job.started_ms,
        "ended_ms": job.ended_ms,
        "uptime_ms": max(0, end - (job.started_ms or job.created_ms)),
        "processing_started_ms": min(started) if started else 0,
        "processing_finished_ms": max(finished) if finished and job.done else 0,
        "error": job.error,
        "restarts": job.restarts.restarts,
        "restart_strategy": job.restarts.describe(),
        "failures": list(job.failures),
        "parallelism": logical.config.parallelism,
        "slots": {"needed": needed, "total": sum(needed.values()), "waiting": job.waiting},
        "placement": _placement(job),
        "tasks": tasks,
        "edges": edges,
        "bottleneck": find_bottleneck(tasks, edges) if job.state is JobState.RUNNING else None,
        "totals": {k: round(v, 1) if isinstance(v, float) else v for k, v in totals.items()},
        "source_progress": _source_progress(tasks, source_tasks),
        "sinks": [
            {"uid": op.uid, **op.description}
            for op in logical.operators
            if op.kind is OperatorKind.SINK
        ],
        "checkpoints": job.checkpoints.summary() if job.checkpoints else None,
        "restored_from": job.restore.path if job.restore else None,
    }


def _placement(job: JobRecord) -> list[dict[str, Any]]:
    """Node × slot → the subtasks in that slot (of this attempt), in node/slot order."""
    tasks = {t.id: t for t in job.graph.job.tasks}
    slots: dict[tuple[str, int], list[SubtaskRef]] = {}
    for a in job.assignments:
        slots.setdefault((a.node_id, a.slot), []).append(SubtaskRef.parse(a.subtask))
    rows = []
    for (node, slot), refs in sorted(slots.items(), key=lambda i: (natural_key(i[0][0]), i[0][1])):
        refs.sort(key=lambda r: (r.task, r.index))
        rows.append(
            {
                "node": node,
                "slot": slot,
                "slot_sharing_group": tasks[refs[0].task].slot_sharing_group,
                "subtasks": [
                    {
                        "subtask": str(r),
                        "name": tasks[r.task].name,
                        "index": r.index,
                        "parallelism": tasks[r.task].parallelism,
                    }
                    for r in refs
                ],
            }
        )
    return rows


def _source_progress(tasks: list[dict[str, Any]], source_tasks: set[int]) -> float | None:
    """The share of the bounded sources' input read, 0..1: each source task's share
    (its subtasks' units summed) averaged over the source tasks; None unless every
    source subtask reported a size."""
    shares = []
    for task in tasks:
        if task["id"] not in source_tasks:
            continue
        subtasks = task["subtasks"]
        if any(sub["source_total"] is None for sub in subtasks):
            return None
        total = sum(sub["source_total"] for sub in subtasks)
        done = sum(sub["source_done"] for sub in subtasks)
        shares.append(min(1.0, done / total) if total else 1.0)
    return round(sum(shares) / len(shares), 4) if shares else None
