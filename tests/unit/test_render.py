"""How the CLI renders checkpoint history (mesh/client/render.py)."""

from __future__ import annotations

from mesh.client.render import format_checkpoints


def _row(checkpoint_id: int, state: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "checkpoint_id": checkpoint_id,
        "kind": "checkpoint",
        "state": state,
        "duration_ms": 61,
        "size_bytes": 147456,
        "path": f"/ck/job/chk-{checkpoint_id}",
        "reason": None,
    }
    row.update(extra)
    return row


def test_each_state_shows_where_it_is_or_why_not() -> None:
    text = format_checkpoints(
        [
            _row(1, "DISCARDED"),
            _row(2, "COMPLETED"),
            _row(3, "FAILED", reason="declined by 1.0: disk full", size_bytes=0),
            _row(4, "ABORTED", reason="the job is finishing", size_bytes=0),
        ]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "KIND", "STATE", "DURATION", "SIZE", "PATH", "/", "REASON"]
    assert "(deleted: beyond the retained checkpoints)" in lines[1]
    assert lines[2].rstrip().endswith("/ck/job/chk-2") and "144.0 KiB" in lines[2]
    assert lines[3].rstrip().endswith("declined by 1.0: disk full")
    assert lines[4].rstrip().endswith("the job is finishing")
    assert "None" not in text
