"""The coordinator's jobs table: what a restarted coordinator reads back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mesh.coordinator.jobstore import JobStore, StoredJob
from mesh.errors import StateError
from mesh.protocol.messages import SubmitJob

SUBMISSION = SubmitJob(
    graph={"config": {"name": "j"}, "operators": [], "edges": []},
    job_name="j",
    entry="job.py",
    build_args={"parallelism": 3},
    base_dir="/srv/jobs",
    bundle=b"PK\x03\x04 zip bytes \x00\xff",
    restore_from="/ckpt/sp-1",
)


def _job(job_id: str = "a1", **changes: object) -> StoredJob:
    values: dict[str, object] = {
        "job_id": job_id,
        "state": "RUNNING",
        "attempt": 2,
        "created_ms": 1_000,
        "started_ms": 1_500,
        "ended_ms": 0,
        "error": None,
        "checkpoint_root": "/ckpt/a1",
        "next_checkpoint_id": 17,
        "restore_path": "/ckpt/sp-1",
        "restarts": 2,
        "submission": SUBMISSION,
    }
    values.update(changes)
    return StoredJob(**values)  # type: ignore[arg-type]


def test_jobs_survive_a_reopen_with_their_submission(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "coordinator.db")
    store.add(_job("a1"))
    store.add(_job("b2", created_ms=2_000, state="FINISHED", ended_ms=9_000))
    store.update("a1", state="RESTARTING", attempt=3, next_checkpoint_id=20, restarts=3)
    store.close()

    jobs, problems = JobStore(tmp_path / "coordinator.db").load()
    assert problems == []
    assert [j.job_id for j in jobs] == ["a1", "b2"]  # oldest first
    assert jobs[0] == _job("a1", state="RESTARTING", attempt=3, next_checkpoint_id=20, restarts=3)
    assert jobs[0].submission.bundle == SUBMISSION.bundle


def test_an_ended_job_drops_its_code_and_old_ones_are_forgotten(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "coordinator.db")
    store.add(_job("a1"))
    store.add(_job("b2"))
    store.drop_bundle("a1")
    store.forget("b2")
    jobs, _ = store.load()
    assert [(j.job_id, j.submission.bundle) for j in jobs] == [("a1", b"")]


def test_an_unreadable_row_is_reported_and_the_others_load(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "coordinator.db")
    store.add(_job("a1"))
    store.add(_job("b2"))
    with sqlite3.connect(tmp_path / "coordinator.db") as conn:
        conn.execute("UPDATE jobs SET submission_body = x'7b6e6f' WHERE job_id = 'b2'")
    jobs, problems = store.load()
    assert [j.job_id for j in jobs] == ["a1"]
    assert len(problems) == 1 and problems[0].startswith("job b2: its stored submission")


def test_only_lifecycle_columns_can_change(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "coordinator.db")
    with pytest.raises(ValueError, match="cannot update bundle"):
        store.update("a1", bundle=b"")


def test_an_unwritable_database_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "coordinator.db").mkdir()
    with pytest.raises(StateError, match=r"coordinator\.db"):
        JobStore(tmp_path / "coordinator.db")
