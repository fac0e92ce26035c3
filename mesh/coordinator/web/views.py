"""What the REST API answers, as JSON-ready data built from the coordinator's records
(pure: records in, dicts out; the field names are the API's contract, pinned by tests
and by the OpenAPI spec in ``spec.py``)."""

from __future__ import annotations

from typing import Any

from mesh.coordinator.bottleneck import BACKPRESSURED_FROM, NOT_BACKPRESSURED_BELOW
from mesh.coordinator.jobs import JobRecord
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.scheduler import natural_key
from mesh.coordinator.store import CheckpointRecord
from mesh.coordinator.views import job_status
from mesh.graph.execution import ExecutionGraph, SubtaskRef
from mesh.graph.layout import Layout, layered_layout
from mesh.graph.logical import OperatorKind
from mesh.protocol.states import CheckpointKind, CheckpointOutcome

__all__ = [
    "backpressure_level",
    "checkpoints_view",
    "failovers_view",
    "graph_layout",
    "graph_view",
    "job_detail",
    "job_summary",
    "nodes_view",
    "subtasks_view",
    "trace_url",
    "watermarks_view",
]

# Failed checkpoints listed with the failovers.
_CHECKPOINT_FAILURES = 20
# The size of a task's box in the drawing, and the space between boxes.
_BOX = (200.0, 84.0)
_GAP = (70.0, 30.0)


def backpressure_level(ratio: float) -> str:
    """Flink's three levels of a backpressure ratio: ``ok``, ``low`` or ``high``."""
    if ratio >= BACKPRESSURED_FROM:
        return "high"
    if ratio >= NOT_BACKPRESSURED_BELOW:
        return "low"
    return "ok"


def trace_url(jaeger_url: str | None, trace_id: str | None) -> str | None:
    """Where Jaeger shows the trace ``trace_id`` (None without both)."""
    if not jaeger_url or not trace_id:
        return None
    return f"{jaeger_url.rstrip('/')}/trace/{trace_id}"


def job_summary(job: JobRecord, now_ms: int) -> dict[str, Any]:
    """One row of the job list."""
    end = job.ended_ms or now_ms
    tasks = job.graph.job.tasks
    return {
        "job_id": job.job_id,
        "name": job.name,
        "state": job.state.value,
        "attempt": job.attempt,
        "restarts": job.restarts.restarts,
        "created_ms": job.created_ms,
        "started_ms": job.started_ms,
        "ended_ms": job.ended_ms,
        "uptime_ms": max(0, end - (job.started_ms or job.created_ms)),
        "tasks": len(tasks),
        "subtasks": sum(t.parallelism for t in tasks),
    }


def job_detail(job: JobRecord, now_ms: int) -> dict[str, Any]:
    """One job: its summary with what went wrong, totals, the bottleneck and the latest
    checkpoint."""
    status = job_status(job, now_ms)
    subtasks = [sub for task in status["tasks"] for sub in task["subtasks"]]
    checkpoints = status["checkpoints"]
    return {
        **job_summary(job, now_ms),
        "error": job.error,
        "restart_strategy": status["restart_strategy"],
        "parallelism": status["parallelism"],
        "slots_needed": status["slots"]["total"],
        "waiting_for_slots": status["slots"]["waiting"],
        "totals": status["totals"],
        "source_progress": status["source_progress"],
        "dead_letters": sum(sub["dead_letters"] for sub in subtasks),
        "late_records": sum(sub["late_records"] for sub in subtasks),
        "bottleneck": _bottleneck(status["bottleneck"]),
        "checkpoint_interval_ms": checkpoints["interval_ms"] if checkpoints else None,
        "latest_checkpoint": _row(checkpoints["latest"], None) if checkpoints else None,
        "restored_from": status["restored_from"],
    }


def _bottleneck(found: dict[str, Any] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "task": found["task"],
        "name": found["name"],
        "subtask": found["subtask"],
        "node": found["node"],
        "backpressure_ratio": round(found["backpressure_ratio"], 3),
        "upstream": found["upstream"],
        "reason": found["reason"],
    }


def graph_layout(graph: ExecutionGraph) -> Layout[int]:
    """The drawing of a job graph (compute it once per graph: a graph never changes)."""
    tasks = [t.id for t in graph.job.tasks]
    edges = [(e.source_task, e.target_task) for e in graph.job.edges]
    return layered_layout(tasks, edges, box=_BOX, gap=_GAP)


def graph_view(job: JobRecord, now_ms: int, layout: Layout[int]) -> dict[str, Any]:
    """The chained task graph with where to draw each task and edge, and each task's
    figures summed (rates, records) or worst-of (backpressure, input fill, watermark)
    over its subtasks; ``bottleneck`` names the task held to be the cause of
    backpressure."""
    status = job_status(job, now_ms)
    fill = _input_fill(job)
    tasks = []
    for task in status["tasks"]:
        box = layout.boxes[task["id"]]
        subs = task["subtasks"]
        ratio = max((sub["backpressure_ratio"] for sub in subs), default=0.0)
        fills = [f for sub in subs if (f := fill.get(sub["subtask"])) is not None]
        marks = [sub["watermark"] for sub in subs]
        states: dict[str, int] = {}
        for sub in subs:
            states[str(sub["state"])] = states.get(str(sub["state"]), 0) + 1
        tasks.append(
            {
                "id": task["id"],
                "name": task["name"],
                "parallelism": task["parallelism"],
                "slot_sharing_group": task["slot_sharing_group"],
                "operators": [
                    {"uid": op["uid"], "name": op["name"], "kind": str(op["kind"])}
                    for op in task["operators"]
                ],
                "x": box.x,
                "y": box.y,
                "width": box.width,
                "height": box.height,
                "records_in": sum(sub["records_in"] for sub in subs),
                "records_out": sum(sub["records_out"] for sub in subs),
                "in_rate": round(sum(sub["in_rate"] for sub in subs), 1),
                "out_rate": round(sum(sub["out_rate"] for sub in subs), 1),
                "backpressure_ratio": round(ratio, 3),
                "backpressure_level": backpressure_level(ratio),
                "input_fill": round(max(fills), 3) if fills else None,
                "watermark": None if not marks or None in marks else min(marks),
                "dead_letters": sum(sub["dead_letters"] for sub in subs),
                "states": states,
            }
        )
    edges = [
        {
            "source": e.source,
            "target": e.target,
            "partitioning": edge["partitioning"],
            "points": [[round(x, 1), round(y, 1)] for x, y in e.points],
        }
        for e, edge in zip(layout.edges, status["edges"], strict=True)
    ]
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "attempt": job.attempt,
        "width": layout.width,
        "height": layout.height,
        "tasks": tasks,
        "edges": edges,
        "bottleneck": _bottleneck(status["bottleneck"]),
    }


def _input_fill(job: JobRecord) -> dict[str, float | None]:
    return {key: m.input_fill for key, m in job.metrics.items()}


def subtasks_view(job: JobRecord, task_id: int, now_ms: int) -> dict[str, Any] | None:
    """Every subtask of one task (None: the job has no such task)."""
    status = job_status(job, now_ms)
    task = next((t for t in status["tasks"] if t["id"] == task_id), None)
    if task is None:
        return None
    fill = _input_fill(job)
    return {
        "job_id": job.job_id,
        "task": task["id"],
        "name": task["name"],
        "parallelism": task["parallelism"],
        "subtasks": [
            {
                "subtask": sub["subtask"],
                "index": sub["index"],
                "node": sub["node"],
                "slot": sub["slot"],
                "state": str(sub["state"]),
                "records_in": sub["records_in"],
                "records_out": sub["records_out"],
                "in_rate": sub["in_rate"],
                "out_rate": sub["out_rate"],
                "backpressure_ratio": sub["backpressure_ratio"],
                "backpressure_level": backpressure_level(sub["backpressure_ratio"]),
                "input_fill": fill.get(sub["subtask"]),
                "watermark": sub["watermark"],
                "watermark_lag_ms": sub["watermark_lag_ms"],
                "dead_letters": sub["dead_letters"],
                "late_records": sub["late_records"],
            }
            for sub in task["subtasks"]
        ],
    }


def _row(record: dict[str, Any] | None, jaeger_url: str | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "checkpoint_id": record["checkpoint_id"],
        "kind": str(record["kind"]),
        "state": str(record["state"]),
        "path": record["path"],
        "triggered_ms": record["triggered_ms"],
        "ended_ms": record["ended_ms"],
        "duration_ms": record["duration_ms"],
        "size_bytes": record["size_bytes"],
        "alignment_ms": record.get("alignment_ms"),
        "reason": record["reason"],
        "trace_url": trace_url(jaeger_url, record.get("trace_id")),
    }


def checkpoints_view(
    job: JobRecord, history: list[CheckpointRecord], limit: int, jaeger_url: str | None
) -> dict[str, Any]:
    """A job's checkpoint history (newest first, at most ``limit``), the point a failover
    would restore from, and its savepoints."""
    rows = [_row(r.to_dict(), jaeger_url) for r in reversed(history)]
    restorable = [
        r for r in history if r.state is CheckpointOutcome.COMPLETED and r.path
    ]  # discarded ones are not
    manager = job.checkpoints
    counts: dict[str, int] = {}
    for r in history:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    return {
        "job_id": job.job_id,
        "interval_ms": manager.policy.interval_ms if manager else None,
        "in_flight": manager.pending.checkpoint_id if manager and manager.pending else None,
        "counts": counts,
        "last_failure": manager.last_failure if manager else None,
        "restore_point": _row(restorable[-1].to_dict(), jaeger_url) if restorable else None,
        "restored_from": job.restore.path if job.restore else None,
        "history": rows[:limit],
        "savepoints": [
            row
            for row in rows
            if row is not None
            and row["kind"] == CheckpointKind.SAVEPOINT.value
            and row["state"] == CheckpointOutcome.COMPLETED.value
        ],
    }


def failovers_view(
    job: JobRecord, history: list[CheckpointRecord], jaeger_url: str | None
) -> dict[str, Any]:
    """A job's failures, newest last, with their causes; the checkpoints that failed
    (the last few, newest last); and its dead letters."""
    failed = [r for r in history if r.state is CheckpointOutcome.FAILED][-_CHECKPOINT_FAILURES:]
    by_subtask = [
        {"subtask": key, "count": m.dead_letters}
        for key, m in sorted(job.metrics.items(), key=lambda i: SubtaskRef.parse(i[0]))
        if m.dead_letters
    ]
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "attempt": job.attempt,
        "restarts": job.restarts.restarts,
        "restart_strategy": job.restarts.describe(),
        "error": job.error,
        "failures": [
            {
                "time_ms": f["time_ms"],
                "attempt": f["attempt"],
                "cause": f.get("cause", "error"),
                "summary": f["error"].strip().splitlines()[-1][:300] if f["error"].strip() else "",
                "error": f["error"],
                "trace_url": trace_url(jaeger_url, f.get("trace_id")),
            }
            for f in job.failures
        ],
        "checkpoint_failures": [
            {
                "checkpoint_id": r.checkpoint_id,
                "kind": r.kind.value,
                "time_ms": r.ended_ms,
                "reason": r.reason or "",
                "trace_url": trace_url(jaeger_url, r.trace_id),
            }
            for r in failed
        ],
        "dead_letters": {
            "total": sum(d["count"] for d in by_subtask),
            "by_subtask": by_subtask,
        },
    }


def watermarks_view(job: JobRecord, now_ms: int) -> dict[str, Any]:
    """The event time of each source subtask and each subtask of a task with a window
    operator, with its lag behind the wall clock."""
    logical = job.graph.logical
    status = job_status(job, now_ms)
    kinds = {t.id: {logical.operator(o).kind for o in t.operators} for t in job.graph.job.tasks}

    def rows(kind: OperatorKind) -> list[dict[str, Any]]:
        return [
            {
                "task": task["id"],
                "name": task["name"],
                "subtask": sub["subtask"],
                "watermark": sub["watermark"],
                "lag_ms": sub["watermark_lag_ms"],
                "late_records": sub["late_records"],
            }
            for task in status["tasks"]
            if kind in kinds[task["id"]]
            for sub in task["subtasks"]
        ]

    return {
        "job_id": job.job_id,
        "sources": rows(OperatorKind.SOURCE),
        "windows": rows(OperatorKind.WINDOW),
    }


def nodes_view(registry: NodeRegistry, jobs: list[JobRecord], now_ms: float) -> dict[str, Any]:
    """Every node with its slots and what runs in each (subtasks sharing a slot are
    listed together)."""
    tasks = {job.job_id: {t.id: t for t in job.graph.job.tasks} for job in jobs}
    in_slot: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for job in jobs:
        if job.done:
            continue
        for a in job.assignments:
            ref = SubtaskRef.parse(a.subtask)
            task = tasks[job.job_id][ref.task]
            in_slot.setdefault((a.node_id, a.slot), []).append(
                {
                    "job_id": job.job_id,
                    "job_name": job.name,
                    "subtask": a.subtask,
                    "name": task.name,
                    "slot_sharing_group": task.slot_sharing_group,
                    "co_location_group": getattr(task, "co_location_group", None),
                }
            )
    nodes = []
    for node in sorted(registry.nodes.values(), key=lambda n: natural_key(n.node_id)):
        summary = node.summary(now_ms)
        held = node.held
        slots = []
        for slot in range(node.slots):
            running = sorted(
                in_slot.get((node.node_id, slot), []), key=lambda s: SubtaskRef.parse(s["subtask"])
            )
            used = node.used.get(slot)
            slots.append(
                {
                    "slot": slot,
                    "job_id": used[0] if used else held.get(slot),
                    "state": "used" if used else "held" if slot in held else "free",
                    "subtasks": running,
                }
            )
        nodes.append(
            {
                "node_id": node.node_id,
                "host": node.host,
                "pid": node.pid,
                "slots": node.slots,
                "free": summary["free"],
                "leaving": node.leaving,
                "heartbeat_age_ms": summary["last_heartbeat_ms_ago"],
                "rss_bytes": node.rss_bytes,
                "wire_errors": node.wire_errors,
                "slot_usage": slots,
            }
        )
    return {"nodes": nodes}
