"""Rendering job and node information for people (the JSON forms are the raw data)."""

from __future__ import annotations

from typing import Any

from mesh.client.progress import progress_line, progress_of
from mesh.protocol.states import CheckpointOutcome, JobState
from mesh.time.durations import format_duration
from mesh.time.watermarks import MAX_WATERMARK

__all__ = [
    "format_bottleneck",
    "format_checkpoints",
    "format_jobs",
    "format_nodes",
    "format_placement",
    "format_progress",
    "format_status",
]


def _count(n: float) -> str:
    return f"{int(n):,}"


def format_progress(status: dict[str, Any]) -> str:
    """One line: state, elapsed, records in/out and their rates (averages once the job
    ended), watermark, latest checkpoint, share of known input read."""
    as_of = (status.get("started_ms") or status.get("created_ms") or 0) + status["uptime_ms"]
    return progress_line(progress_of(status, as_of))


def _table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_jobs(jobs: list[dict[str, Any]]) -> str:
    """``mesh list``: one line per job."""
    rows = [["JOB ID", "NAME", "STATE", "UPTIME"]]
    for job in jobs:
        rows.append([job["job_id"], job["name"], job["state"], format_duration(job["uptime_ms"])])
    return _table(rows)


def format_status(status: dict[str, Any]) -> str:
    """``mesh status``: the job, its graph, placement and per-subtask counts."""
    lines = [
        f"job {status['job_id']} ({status['name']}): {status['state']}, "
        f"up {format_duration(status['uptime_ms'])}, attempt {status['attempt']}",
        format_progress(status),
    ]
    checkpoints = status.get("checkpoints")
    if checkpoints:
        latest = checkpoints.get("latest")
        every = checkpoints.get("interval_ms")
        line = f"checkpoints: every {format_duration(every)}" if every else "checkpoints: off"
        line += f", {checkpoints['completed']} completed"
        if latest:
            line += (
                f"; latest {latest['kind']} {latest['checkpoint_id']} took "
                f"{format_duration(latest['duration_ms'])}, {latest['size_bytes'] / 1024:.0f} KiB"
            )
        if checkpoints.get("in_flight"):
            line += f"; {checkpoints['in_flight']} in flight"
        lines.append(line)
        if checkpoints.get("last_failure"):
            lines.append(f"last checkpoint failure: {checkpoints['last_failure']}")
    if status.get("restored_from"):
        lines.append(f"restored from {status['restored_from']}")
    restarts = status.get("restarts", 0)
    if restarts or status["state"] == JobState.RESTARTING:
        lines.append(f"restarts: {restarts} ({status.get('restart_strategy', '')})")
    failures = status.get("failures") or []
    if failures and not status.get("error"):  # a final error already says it all
        last = failures[-1]
        lines += ["", f"last failure (attempt {last['attempt']}):", last["error"]]
    if status.get("error"):
        lines += ["", "error:", status["error"]]
    slots = status.get("slots")
    if slots:
        groups = ", ".join(f"{g} {n}" for g, n in slots["needed"].items())
        lines.append(f"slots: needs {slots['total']} ({groups})")
        if slots.get("waiting"):
            lines.append(f"waiting for slots: {slots['waiting']}")
    bottleneck = status.get("bottleneck")
    if bottleneck:
        lines.append(format_bottleneck(bottleneck))
    lines += ["", "graph:"]
    for task in status["tasks"]:
        lines.append(f"  task {task['id']}: {task['name']}  (parallelism {task['parallelism']})")
    for edge in status["edges"]:
        lines.append(f"  task {edge['source']} -> task {edge['target']}: {edge['partitioning']}")
    header = [
        "SUBTASK",
        "NAME",
        "NODE",
        "SLOT",
        "STATE",
        "IN",
        "OUT",
        "IN/S",
        "OUT/S",
        "BP ms",
        "BP %",
    ]
    subs = [sub for task in status["tasks"] for sub in task["subtasks"]]
    dead = any(sub.get("dead_letters") for sub in subs)
    timed = any(sub.get("watermark") is not None for sub in subs)
    late = any(sub.get("late_records") for sub in subs)
    header = [*header, *(["DEAD"] if dead else []), *(["WATERMARK", "WM LAG"] if timed else [])]
    rows = [[*header, "LATE (DROPPED)"] if late else header]
    for task in status["tasks"]:
        for sub in task["subtasks"]:
            rows.append(
                [
                    sub["subtask"],
                    f"{task['name']} ({sub['index'] + 1}/{task['parallelism']})",
                    "-" if sub["node"] is None else str(sub["node"]),
                    "-" if sub["slot"] is None else str(sub["slot"]),
                    sub["state"],
                    _count(sub["records_in"]),
                    _count(sub["records_out"]),
                    _count(sub["in_rate"]),
                    _count(sub["out_rate"]),
                    _count(sub["backpressure_ms"]),
                    f"{sub.get('backpressure_ratio', 0.0):.0%}",
                    *([_count(sub.get("dead_letters", 0))] if dead else []),
                    *(_watermark(sub) if timed else []),
                    *([_late(sub)] if late else []),
                ]
            )
    lines += ["", "records:", _table(rows)]
    if status.get("placement"):
        lines += ["", "placement:", format_placement(status["placement"])]
    return "\n".join(lines)


def format_bottleneck(bottleneck: dict[str, Any]) -> str:
    """One line naming the subtask most likely holding the job back, and why."""
    node = bottleneck.get("node")
    where = f" on node {node}" if node else ""
    return (
        f"backpressure: likely bottleneck {bottleneck['name']} [{bottleneck['index']}]"
        f" (subtask {bottleneck['subtask']}){where} — {bottleneck['reason']}"
    )


def format_placement(placement: list[dict[str, Any]]) -> str:
    """Node × slot → the subtasks that slot holds, one line per slot."""
    rows = [["NODE", "SLOT", "GROUP", "SUBTASKS"]]
    for entry in placement:
        subtasks = ", ".join(
            f"{s['subtask']} {s['name']} ({s['index'] + 1}/{s['parallelism']})"
            for s in entry["subtasks"]
        )
        rows.append([entry["node"], str(entry["slot"]), entry["slot_sharing_group"], subtasks])
    return _table(rows)


def _watermark(sub: dict[str, Any]) -> list[str]:
    """A subtask's watermark (ms of event time) and how far it trails the wall clock."""
    mark = sub.get("watermark")
    if mark is None:
        return ["-", "-"]
    if mark >= MAX_WATERMARK:  # the end of input
        return ["end", "-"]
    lag = sub.get("watermark_lag_ms")
    return [str(mark), format_duration(max(lag, 0)) if lag is not None else "-"]


def _late(sub: dict[str, Any]) -> str:
    return f"{_count(sub.get('late_records', 0))} ({_count(sub.get('late_dropped', 0))})"


def format_nodes(nodes: list[dict[str, Any]]) -> str:
    """``mesh nodes``: one line per node."""
    rows = [["NODE", "HOST", "PID", "SLOTS", "USED", "FREE", "LAST HEARTBEAT", "RSS MiB", "JOBS"]]
    for node in nodes:
        rows.append(
            [
                node["node_id"] + (" (leaving)" if node.get("leaving") else ""),
                node["host"],
                str(node["pid"]),
                str(node["slots"]),
                str(node["used"]),
                str(node["free"]),
                f"{format_duration(node['last_heartbeat_ms_ago'])} ago",
                f"{node['rss_bytes'] / 1048576:.0f}",
                ",".join(node["jobs"]) or "-",
            ]
        )
    return _table(rows)


def _where_or_why(row: dict[str, Any]) -> str:
    if row["state"] == CheckpointOutcome.COMPLETED:
        return str(row["path"])
    if row["state"] == CheckpointOutcome.DISCARDED:
        return "(deleted: beyond the retained checkpoints)"
    return str(row.get("reason") or "")


def format_checkpoints(rows: list[dict[str, Any]]) -> str:
    """``mesh checkpoints``: one line per checkpoint or savepoint."""
    table = [["ID", "KIND", "STATE", "DURATION", "SIZE", "PATH / REASON"]]
    for row in rows:
        size = row["size_bytes"]
        table.append(
            [
                str(row["checkpoint_id"]),
                row["kind"],
                row["state"],
                format_duration(row["duration_ms"]),
                f"{size / 1024:.1f} KiB" if size < 1048576 else f"{size / 1048576:.1f} MiB",
                _where_or_why(row),
            ]
        )
    return _table(table)
