"""How `mesh status` and `mesh nodes` render slots and placement (mesh/client/render.py)."""

from __future__ import annotations

from typing import Any

from mesh.client.render import format_nodes, format_placement, format_status


def _sub(subtask: str, name: str, index: int, parallelism: int) -> dict[str, Any]:
    return {"subtask": subtask, "name": name, "index": index, "parallelism": parallelism}


PLACEMENT = [
    {
        "node": "node-1",
        "slot": 0,
        "slot_sharing_group": "default",
        "subtasks": [_sub("0.0", "read", 0, 2), _sub("1.0", "parse", 0, 2)],
    },
    {
        "node": "node-2",
        "slot": 1,
        "slot_sharing_group": "heavy",
        "subtasks": [_sub("2.0", "score", 0, 1)],
    },
]


def test_placement_is_one_line_per_slot_with_its_subtasks() -> None:
    lines = format_placement(PLACEMENT).splitlines()
    assert lines[0].split() == ["NODE", "SLOT", "GROUP", "SUBTASKS"]
    assert lines[1].split() == [
        "node-1",
        "0",
        "default",
        "0.0",
        "read",
        "(1/2),",
        "1.0",
        "parse",
        "(1/2)",
    ]
    assert lines[2].split() == ["node-2", "1", "heavy", "2.0", "score", "(1/1)"]


def _status(**extra: Any) -> dict[str, Any]:
    return {
        "job_id": "abc",
        "name": "demo",
        "state": "SCHEDULING",
        "uptime_ms": 1500,
        "attempt": 0,
        "totals": {"records_in": 0, "records_out": 0, "in_rate": 0.0, "out_rate": 0.0},
        "tasks": [],
        "edges": [],
        **extra,
    }


def test_status_says_how_many_slots_the_job_needs_and_why_it_waits() -> None:
    waiting = "job needs 6 slot(s) (default: 4, heavy: 2) but the cluster has 4 free: ..."
    shown = format_status(
        _status(slots={"needed": {"default": 4, "heavy": 2}, "total": 6, "waiting": waiting})
    )
    assert "slots: needs 6 (default 4, heavy 2)" in shown
    assert f"waiting for slots: {waiting}" in shown
    assert "placement:" not in shown  # nothing placed yet
    placed = format_status(
        _status(slots={"needed": {"default": 2}, "total": 2, "waiting": None}, placement=PLACEMENT)
    )
    assert "waiting for slots" not in placed
    assert "placement:" in placed and "node-2  1     heavy    2.0 score (1/1)" in placed


def test_nodes_show_used_and_free_slots_and_last_heartbeat() -> None:
    shown = format_nodes(
        [
            {
                "node_id": "node-1",
                "host": "h",
                "pid": 7,
                "slots": 4,
                "used": 3,
                "free": 1,
                "last_heartbeat_ms_ago": 250,
                "rss_bytes": 3 * 1048576,
                "jobs": ["j1"],
            }
        ]
    ).splitlines()
    assert shown[0].split()[:6] == ["NODE", "HOST", "PID", "SLOTS", "USED", "FREE"]
    assert shown[1].split()[:6] == ["node-1", "h", "7", "4", "3", "1"]
    assert "ago" in shown[1] and shown[1].split()[-1] == "j1"
