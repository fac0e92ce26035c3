"""Which subtask is most likely holding a job back (pure: status data in, an answer out).

Backpressure walks upstream: a slow subtask stops returning credit, its producers wait
for output room (their backpressure ratio rises), their input fills, and so on up to
the sources. So the subtasks that wait are *not* the slow one; as in Flink, the likely
root cause is the first subtask downstream of backpressured ones that is not itself
backpressured — it has work waiting at its input but nothing stopping its output.

A subtask's backpressure ratio is the share of recent wall time it spent waiting for
output credit (0..1, from the coordinator's two latest reports of the subtask).

Rules: subtask X is a candidate when it is RUNNING, its ratio is below
``NOT_BACKPRESSURED_BELOW``, its input buffers are not mostly empty (its ``input_fill``,
when reported, is at least ``INPUT_FILLED_FROM``), and a subtask that feeds it (through a
forward edge: the one with X's index; any other partitioning: every subtask of the
upstream task) has a ratio of at least ``BACKPRESSURED_FROM``. The fill rule tells a
slow consumer from a starved one: when a producer feeds two consumers and one of them
is slow, the producer waits, and the other consumer, fast but with nothing to read,
would otherwise look just like the slow one. A sink waits for its destination (a socket, a
disk) the way other subtasks wait for credit, so a RUNNING subtask of a task with no
output edges whose own ratio is at least ``BACKPRESSURED_FROM`` is a candidate too: what
it writes to is not keeping up. Of several candidates the one that waits most (the
upstream subtask, or the sink itself) is named (ties: lowest task, then index); none
gives None.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKPRESSURED_FROM", "INPUT_FILLED_FROM", "NOT_BACKPRESSURED_BELOW", "find_bottleneck"]

#: A subtask waiting for output credit at least this share of the time is backpressured
#: (Flink's "HIGH").
BACKPRESSURED_FROM = 0.5
#: A subtask waiting less than this share of the time is not backpressured (Flink's "OK").
NOT_BACKPRESSURED_BELOW = 0.1
#: A subtask whose input buffers are less full than this share is starved, not slow.
INPUT_FILLED_FROM = 0.5


def find_bottleneck(
    tasks: list[dict[str, Any]], edges: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The likely bottleneck among ``tasks``' subtasks (as ``mesh status`` lists tasks and
    edges), or None when no subtask fits the rules of this module."""
    by_id = {task["id"]: task for task in tasks}
    candidates: list[tuple[tuple[float, int, int], dict[str, Any]]] = []
    for edge in edges:
        upstream, downstream = by_id.get(edge["source"]), by_id.get(edge["target"])
        if upstream is None or downstream is None:
            continue
        for sub in downstream["subtasks"]:
            if sub.get("state") != "RUNNING" or _ratio(sub) >= NOT_BACKPRESSURED_BELOW:
                continue
            fill = sub.get("input_fill")
            if fill is not None and fill < INPUT_FILLED_FROM:
                continue
            feeding = [
                up
                for up in upstream["subtasks"]
                if edge["partitioning"] != "forward" or up["index"] == sub["index"]
            ]
            if not feeding:
                continue
            waiting = max(feeding, key=_ratio)
            if _ratio(waiting) >= BACKPRESSURED_FROM:
                rank = (-_ratio(waiting), downstream["id"], sub["index"])
                candidates.append((rank, _behind(downstream, sub, upstream, waiting)))
    with_outputs = {edge["source"] for edge in edges}
    for task in tasks:
        if task["id"] in with_outputs:
            continue
        for sub in task["subtasks"]:
            if sub.get("state") == "RUNNING" and _ratio(sub) >= BACKPRESSURED_FROM:
                rank = (-_ratio(sub), task["id"], sub["index"])
                candidates.append((rank, _blocked_sink(task, sub)))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def _ratio(sub: dict[str, Any]) -> float:
    return float(sub.get("backpressure_ratio") or 0.0)


def _where(task: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": task["id"],
        "name": task["name"],
        "subtask": sub["subtask"],
        "index": sub["index"],
        "node": sub.get("node"),
        "backpressure_ratio": _ratio(sub),
    }


def _behind(
    task: dict[str, Any], sub: dict[str, Any], upstream: dict[str, Any], waiting: dict[str, Any]
) -> dict[str, Any]:
    return {
        **_where(task, sub),
        "upstream": waiting["subtask"],
        "upstream_name": upstream["name"],
        "upstream_backpressure_ratio": _ratio(waiting),
        "reason": (
            f"its input is backpressured ({upstream['name']} [{waiting['index']}] waits "
            f"{_ratio(waiting):.0%} of the time for output room), its output is not "
            f"({_ratio(sub):.0%})"
        ),
    }


def _blocked_sink(task: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    return {
        **_where(task, sub),
        "upstream": None,
        "upstream_name": None,
        "upstream_backpressure_ratio": None,
        "reason": (
            f"it ends the pipeline and waits {_ratio(sub):.0%} of the time for its sink's "
            "destination: what it writes to is not keeping up"
        ),
    }
