"""The snapshot file: one SQLite database per operator subtask per checkpoint.

Anyone can open one with the ``sqlite3`` shell. Tables (all STRICT):

* ``keyed_state(key_group, key, namespace, name, value, expires_at)`` — one row per
  key, state namespace (``''`` unless windows use one) and state name. ``key`` and
  ``value`` are JSON text; ``expires_at`` is the TTL deadline in epoch ms or NULL.
  Rows are ordered by key group, so restoring a range of key groups is a range read.
* ``operator_state(name, position, value)`` — list state of non-keyed operators
  (source splits and their positions, a sink's pending transactions), JSON text.
* ``meta(key, value)`` — what the file is (operator uid, subtask, parallelism, key
  group range, checkpoint id), for people reading it.

Both state backends write this format, so a checkpoint restores into either.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mesh.errors import StateError
from mesh.graph.keygroups import KeyGroupRange
from mesh.state.files import sha256_file

__all__ = [
    "SCHEMA",
    "FileInfo",
    "KeyedRow",
    "SnapshotReader",
    "create_snapshot_file",
    "file_info",
    "write_rows",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyed_state (
    key_group INTEGER NOT NULL CHECK (key_group >= 0),
    key TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (key_group, key, namespace, name)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operator_state (
    name TEXT NOT NULL,
    position INTEGER NOT NULL CHECK (position >= 0),
    value TEXT NOT NULL,
    PRIMARY KEY (name, position)
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
"""

#: (key_group, key JSON, namespace, name, value JSON, expires_at or None)
KeyedRow = tuple[int, str, str, str, str, int | None]


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A written snapshot file: where, how big, and its sha256."""

    path: str
    size: int
    sha256: str


def create_snapshot_file(
    path: Path, meta: dict[str, Any], operator_state: dict[str, list[Any]]
) -> None:
    """Create ``path`` with the schema, its meta rows and the operator state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        with conn:
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [(k, orjson.dumps(v).decode()) for k, v in sorted(meta.items())],
            )
            conn.executemany(
                "INSERT INTO operator_state VALUES (?, ?, ?)",
                [
                    (name, i, orjson.dumps(value).decode())
                    for name, values in sorted(operator_state.items())
                    for i, value in enumerate(values)
                ],
            )
    finally:
        conn.close()


def write_rows(path: Path, rows: Iterable[KeyedRow]) -> None:
    """Append keyed rows to the snapshot file at ``path`` (one transaction)."""
    conn = sqlite3.connect(path)
    try:
        # The file is referenced only once complete and fsynced (``file_info``): no
        # journal needed while it is written.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            conn.executemany("INSERT INTO keyed_state VALUES (?, ?, ?, ?, ?, ?)", rows)
    finally:
        conn.close()


def file_info(path: Path) -> FileInfo:
    """Fsync ``path`` and describe it (size and sha256)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return FileInfo(path=str(path), size=path.stat().st_size, sha256=sha256_file(path))


class SnapshotReader:
    """Reads a snapshot file (read-only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self._conn.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"snapshot file {path} cannot be read: {exc}") from None

    def meta(self) -> dict[str, Any]:
        """The file's meta rows."""
        try:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
            return {k: orjson.loads(v) for k, v in rows}
        except (sqlite3.Error, orjson.JSONDecodeError) as exc:
            raise StateError(f"snapshot file {self.path}: bad meta table: {exc}") from None

    def operator_state(self) -> dict[str, list[Any]]:
        """Operator list state by name, in position order."""
        out: dict[str, list[Any]] = {}
        try:
            for name, value in self._conn.execute(
                "SELECT name, value FROM operator_state ORDER BY name, position"
            ):
                out.setdefault(name, []).append(orjson.loads(value))
        except (sqlite3.Error, orjson.JSONDecodeError) as exc:
            raise StateError(f"snapshot file {self.path}: bad operator state: {exc}") from None
        return out

    def keyed_rows(self, groups: KeyGroupRange) -> Iterator[KeyedRow]:
        """Keyed rows whose key group is in ``groups``, in key group order."""
        yield from self._conn.execute(
            "SELECT key_group, key, namespace, name, value, expires_at FROM keyed_state "
            "WHERE key_group >= ? AND key_group < ? ORDER BY key_group",
            (groups.start, groups.end),
        )

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
