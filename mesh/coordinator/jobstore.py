"""The coordinator's jobs in its database (``<state_dir>/coordinator.db``, table ``jobs``).

One row per job: the submission (graph, code bundle, arguments) as the client sent it,
the lifecycle state, the attempt number and the next checkpoint id. A coordinator that
restarts (``kill -9``, systemd's ``Restart=always``) reads the rows back and resumes
every job that had not ended from its latest completed checkpoint, with a higher
attempt number and checkpoint ids that are never reused. The code bundle of an ended
job is dropped; its row stays for ``mesh list`` and ``mesh status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.coordinator.store import open_database, write
from mesh.errors import FrameError
from mesh.protocol import codec
from mesh.protocol.messages import SubmitJob

__all__ = ["JobStore", "StoredJob"]

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL CHECK (attempt >= 0),
    created_ms INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    error TEXT,
    checkpoint_root TEXT NOT NULL,
    next_checkpoint_id INTEGER NOT NULL CHECK (next_checkpoint_id > 0),
    restore_path TEXT,
    restarts INTEGER NOT NULL,
    submission_header BLOB NOT NULL,
    submission_body BLOB NOT NULL,
    bundle BLOB NOT NULL
) STRICT;
"""

# Columns a state change may update (never the submission).
_MUTABLE = frozenset(
    {"state", "attempt", "started_ms", "ended_ms", "error", "next_checkpoint_id", "restarts"}
)


@dataclass(frozen=True, slots=True)
class StoredJob:
    """One row of ``jobs``."""

    job_id: str
    state: str
    attempt: int
    created_ms: int
    started_ms: int
    ended_ms: int
    error: str | None
    checkpoint_root: str
    next_checkpoint_id: int
    restore_path: str | None
    restarts: int
    submission: SubmitJob


class JobStore:
    """Jobs in a SQLite file (small synchronous writes, one per lifecycle change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_database(path, _SCHEMA)

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        write(self._conn, self.path, sql, args)

    def add(self, job: StoredJob) -> None:
        """Insert a new job with its submission."""
        header, body, bundle = codec.encode(job.submission)
        self._write(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.job_id,
                job.state,
                job.attempt,
                job.created_ms,
                job.started_ms,
                job.ended_ms,
                job.error,
                job.checkpoint_root,
                job.next_checkpoint_id,
                job.restore_path,
                job.restarts,
                header,
                body,
                bundle,
            ),
        )

    def update(self, job_id: str, **values: Any) -> None:
        """Change some of a job's columns (see ``_MUTABLE``)."""
        unknown = set(values) - _MUTABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))} of a stored job")
        columns = ", ".join(f"{name} = ?" for name in values)
        self._write(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*values.values(), job_id))

    def drop_bundle(self, job_id: str) -> None:
        """The job ended: its code is no longer needed."""
        self._write("UPDATE jobs SET bundle = x'' WHERE job_id = ?", (job_id,))

    def forget(self, job_id: str) -> None:
        """Delete a job's row (an ended job beyond the retained ones)."""
        self._write("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def load(self) -> tuple[list[StoredJob], list[str]]:
        """Every stored job, oldest first, and a reason for each row that could not be read."""
        rows = self._conn.execute("SELECT * FROM jobs ORDER BY created_ms").fetchall()
        jobs: list[StoredJob] = []
        problems: list[str] = []
        for row in rows:
            (job_id, state, attempt, created, started, ended, error, root, next_id, restore,
             restarts, header, body, bundle) = row  # fmt: skip
            try:
                submission = codec.decode([header, body, bundle]).message
            except FrameError as exc:
                problems.append(f"job {job_id}: its stored submission is unreadable: {exc}")
                continue
            if not isinstance(submission, SubmitJob):
                problems.append(f"job {job_id}: its stored submission is not a job")
                continue
            jobs.append(
                StoredJob(
                    job_id=job_id,
                    state=state,
                    attempt=attempt,
                    created_ms=created,
                    started_ms=started,
                    ended_ms=ended,
                    error=error,
                    checkpoint_root=root,
                    next_checkpoint_id=next_id,
                    restore_path=restore,
                    restarts=restarts,
                    submission=submission,
                )
            )
        return jobs, problems

    def close(self) -> None:
        """Close the database."""
        self._conn.close()
