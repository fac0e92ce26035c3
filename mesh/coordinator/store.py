"""The coordinator's database (``<state_dir>/coordinator.db``): checkpoint history.

One STRICT table, ``checkpoints``, one row per checkpoint or savepoint a job took:
completed ones with their directory, duration and size; failed ones with the reason.
``mesh checkpoints JOB`` reads it, and a restarted coordinator will find each job's
latest completed checkpoint here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mesh.errors import StateError
from mesh.protocol.states import CheckpointKind, CheckpointOutcome

__all__ = ["CheckpointRecord", "CheckpointStore", "open_database", "write"]

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    checkpoint_id INTEGER NOT NULL CHECK (checkpoint_id > 0),
    kind TEXT NOT NULL CHECK (kind IN ('checkpoint', 'savepoint')),
    state TEXT NOT NULL CHECK (state IN ('COMPLETED', 'FAILED', 'ABORTED', 'DISCARDED')),
    path TEXT NOT NULL,
    triggered_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    reason TEXT,
    alignment_ms REAL,
    trace_id TEXT,
    PRIMARY KEY (job_id, checkpoint_id)
) STRICT;
"""

# Columns added since the first release, added to older databases when opened.
_ADDED_COLUMNS = {"alignment_ms": "REAL", "trace_id": "TEXT"}


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One row of the history."""

    job_id: str
    checkpoint_id: int
    kind: CheckpointKind
    state: CheckpointOutcome
    path: str
    triggered_ms: int
    ended_ms: int
    duration_ms: int
    size_bytes: int
    reason: str | None = None
    alignment_ms: float | None = None  # the longest barrier alignment of its subtasks
    trace_id: str | None = None  # its trace, when traces are exported

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating if needed) the coordinator database with a table ``schema``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the coordinator database {path}: {exc}") from None
    return conn


def write(conn: sqlite3.Connection, path: Path, sql: str, args: tuple[Any, ...]) -> None:
    """One autocommitted statement; a failure is a StateError naming the database."""
    try:
        conn.execute(sql, args)
    except sqlite3.Error as exc:
        raise StateError(f"cannot write the coordinator database {path}: {exc}") from None


class CheckpointStore:
    """Checkpoint history in a SQLite file (small, synchronous writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_database(path, _SCHEMA)
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(checkpoints)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                write(self._conn, path, f"ALTER TABLE checkpoints ADD COLUMN {column} {kind}", ())

    def record(self, row: CheckpointRecord) -> None:
        """Insert (or replace) a row."""
        write(
            self._conn,
            self.path,
            "INSERT OR REPLACE INTO checkpoints (job_id, checkpoint_id, kind, state, path, "
            "triggered_ms, ended_ms, duration_ms, size_bytes, reason, alignment_ms, trace_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.job_id,
                row.checkpoint_id,
                row.kind,
                row.state,
                row.path,
                row.triggered_ms,
                row.ended_ms,
                row.duration_ms,
                row.size_bytes,
                row.reason,
                row.alignment_ms,
                row.trace_id,
            ),
        )

    def mark_discarded(self, job_id: str, checkpoint_id: int) -> None:
        """A completed checkpoint's files were deleted (retention)."""
        write(
            self._conn,
            self.path,
            "UPDATE checkpoints SET state = 'DISCARDED' WHERE job_id = ? AND checkpoint_id = ?",
            (job_id, checkpoint_id),
        )

    def history(self, job_id: str) -> list[CheckpointRecord]:
        """Every row of a job, oldest first."""
        rows = self._conn.execute(
            "SELECT job_id, checkpoint_id, kind, state, path, triggered_ms, ended_ms, "
            "duration_ms, size_bytes, reason, alignment_ms, trace_id "
            "FROM checkpoints WHERE job_id = ? ORDER BY checkpoint_id",
            (job_id,),
        ).fetchall()
        return [
            CheckpointRecord(
                row[0], row[1], CheckpointKind(row[2]), CheckpointOutcome(row[3]), *row[4:]
            )
            for row in rows
        ]

    def close(self) -> None:
        """Close the database."""
        self._conn.close()
