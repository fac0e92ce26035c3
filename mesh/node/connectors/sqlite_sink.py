"""``sinks.SQLite``: an exactly-once sink into a table of a SQLite database.

Rows are staged in ``_mesh_staging`` under the current transaction's name; pre-commit
renames them to the transaction's deterministic name; commit moves them into the table
(upserting on ``key`` if given) and records the name in ``_mesh_commits`` in the same
SQLite transaction, so committing twice does nothing. See ``txn_sinks`` for the
protocol. The writer stages and pre-commits; the committer commits and cleans up.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import orjson

from mesh.connectors.base import Committer, SinkWriter
from mesh.connectors.transactions import TransactionNames, transaction_pattern
from mesh.errors import GraphError, RecordError, StateError
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.context import TaskContext
from mesh.node.operators.records import describe_record, encode_lines

__all__ = ["SqliteCommitter", "SqliteWriter"]

_TYPES = {bool: "INTEGER", int: "INTEGER", float: "REAL", str: "TEXT"}


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:  # several subtasks open the file at once; one of them switches it to WAL
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.OperationalError:
        pass
    return conn


class SqliteWriter(SinkWriter):
    """``sinks.SQLite``: rows staged per transaction.

    Staged rows are inserted in a worker thread (``wait_writable``, after every batch)
    through their own connection, without fsync; pre-commit renames the staging rows to
    the transaction's name in a transaction that is fsynced (it makes every earlier
    insert durable too), on a second connection on the event loop.
    """

    backpressured = True

    def __init__(self, spec: OperatorSpec, sink: Any, ctx: TaskContext) -> None:
        self.spec = spec
        self.names = TransactionNames(ctx, spec.uid)
        self.path = ctx.resolve(sink.path)
        self.table = sink.table
        self.key = sink.key
        self._conn: sqlite3.Connection | None = None  # pre-commit, commit (event loop)
        self._writer: sqlite3.Connection | None = None  # staging inserts (worker thread)
        self._current: str | None = None  # staging name of the current transaction
        self._row = 0  # rows staged in the current transaction so far
        self._unwritten: list[tuple[str, int, str]] = []  # staged rows not inserted yet
        self._columns: list[str] | None = None

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _mesh_staging (txn TEXT NOT NULL, seq INTEGER NOT "
                "NULL, row TEXT NOT NULL, PRIMARY KEY (txn, seq)) STRICT"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _mesh_commits (txn TEXT PRIMARY KEY, "
                "committed_ms INTEGER NOT NULL) STRICT"
            )
            writer = _connect(self.path)
            writer.execute("PRAGMA synchronous = NORMAL")  # pre-commit makes it durable
        except (OSError, sqlite3.Error) as exc:
            raise GraphError(f"sink {self.spec.uid!r}: cannot open {self.path}: {exc}") from None
        self._conn = conn
        self._writer = writer

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"sink {self.spec.uid!r}: {self.path} is not open")
        return self._conn

    def write(self, records: list[Any]) -> None:
        batch = records
        for record in batch:
            if not isinstance(record, dict):
                raise RecordError(
                    f"sink {self.spec.uid!r} (SQLite {self.table}) needs dict records, got "
                    f"{describe_record(record)}"
                )
            if self.key is not None and record.get(self.key) is None:
                raise RecordError(
                    f"sink {self.spec.uid!r} (SQLite {self.table}) upserts by {self.key!r}, but "
                    f"a record has no {self.key!r}: {describe_record(record)}"
                )
        if self._current is None:
            self._current = f"~{self.names.current()}"
            self._row = 0
        rows = encode_lines(self.spec, batch).splitlines()
        txn, start = self._current, self._row
        self._row += len(rows)
        self._unwritten.extend((txn, start + i, row.decode()) for i, row in enumerate(rows))

    async def wait_writable(self) -> None:
        if self._unwritten:
            rows, self._unwritten = self._unwritten, []
            await anyio.to_thread.run_sync(self._insert, self._writer, rows)

    def _insert(self, conn: sqlite3.Connection | None, rows: list[tuple[str, int, str]]) -> None:
        if conn is None:
            raise StateError(f"sink {self.spec.uid!r}: {self.path} is not open")
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO _mesh_staging VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(f"sink {self.spec.uid!r}: cannot write {self.path}: {exc}") from None

    def prepare_commit(self, transaction: str) -> dict[str, Any] | None:
        if self._current is None:
            return None
        txn = transaction
        conn = self._db()
        if self._unwritten:  # the input ended right after a batch: insert it here
            rows, self._unwritten = self._unwritten, []
            self._insert(conn, rows)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM _mesh_staging WHERE txn = ?", (txn,))  # an earlier try
            conn.execute("UPDATE _mesh_staging SET txn = ? WHERE txn = ?", (txn, self._current))
            conn.execute("COMMIT")  # fsynced (synchronous FULL on this connection)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"sink {self.spec.uid!r}: cannot pre-commit into {self.path}: {exc}"
            ) from None
        self._current = None
        return {"txn": txn, "path": str(self.path), "rows": self._row}

    def abort(self) -> None:
        self._unwritten = []
        if self._current is not None and self._conn is not None:
            try:
                self._conn.execute("DELETE FROM _mesh_staging WHERE txn = ?", (self._current,))
            except sqlite3.Error:
                pass
        self._current = None

    def close(self) -> None:
        self.abort()
        for conn in (self._conn, self._writer):
            if conn is not None:
                conn.close()
        self._conn = self._writer = None


class SqliteCommitter(Committer):
    """``sinks.SQLite``: moves a pre-committed transaction's rows into the table and
    records its name, in one SQLite transaction; cleans up what failed attempts staged."""

    def __init__(self, spec: OperatorSpec, sink: Any, ctx: TaskContext) -> None:
        self.spec = spec
        self.clock = ctx.clock
        self.path = ctx.resolve(sink.path)
        self.table = sink.table
        self.key = sink.key
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        try:
            self._conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise GraphError(f"sink {self.spec.uid!r}: cannot open {self.path}: {exc}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"sink {self.spec.uid!r}: {self.path} is not open")
        return self._conn

    def _ensure_table(self, conn: sqlite3.Connection, sample: dict[str, Any]) -> list[str]:
        existing = [row[1] for row in conn.execute(f'PRAGMA table_info("{self.table}")')]
        if not existing:
            if self.key is not None and self.key not in sample:
                raise RecordError(
                    f"sink {self.spec.uid!r}: records need the key field {self.key!r}: "
                    f"{describe_record(sample)}"
                )
            columns = ", ".join(
                f'"{name}" {_TYPES.get(type(value), "TEXT")}' for name, value in sample.items()
            )
            if self.key is not None:  # a table constraint: never an alias of the rowid
                columns += f', PRIMARY KEY ("{self.key}")'
            conn.execute(f'CREATE TABLE "{self.table}" ({columns})')
            existing = list(sample)
        return existing

    async def commit(self, committable: dict[str, Any]) -> None:
        # An fsynced SQLite transaction: off the event loop.
        await anyio.to_thread.run_sync(self._commit, committable)

    def _commit(self, entry: dict[str, Any]) -> None:
        path = Path(entry.get("path", self.path))
        if path == self.path:
            self._commit_in(self._db(), path, entry)
            return
        # A transaction the restored-from job staged in another database (its sink path
        # resolved elsewhere): it commits there.
        try:
            conn = _connect(path)
        except sqlite3.Error as exc:
            raise StateError(
                f"sink {self.spec.uid!r}: cannot open {path} to commit {entry['txn']}: {exc}"
            ) from None
        try:
            self._commit_in(conn, path, entry)
        finally:
            conn.close()

    def _commit_in(self, conn: sqlite3.Connection, path: Path, entry: dict[str, Any]) -> None:
        txn = entry["txn"]
        try:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("SELECT 1 FROM _mesh_commits WHERE txn = ?", (txn,)).fetchone():
                conn.execute("COMMIT")
                return
            rows = [
                orjson.loads(r[0])
                for r in conn.execute(
                    "SELECT row FROM _mesh_staging WHERE txn = ? ORDER BY seq", (txn,)
                )
            ]
            if len(rows) != entry.get("rows", len(rows)):
                conn.execute("ROLLBACK")
                raise StateError(
                    f"sink {self.spec.uid!r}: transaction {txn} staged {entry['rows']} rows in "
                    f"{path}, but {len(rows)} are there: its records are lost"
                )
            if rows:
                columns = self._ensure_table(conn, rows[0])
                for name in {k for r in rows for k in r} - set(columns):
                    conn.execute(f'ALTER TABLE "{self.table}" ADD COLUMN "{name}"')
                    columns.append(name)
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" * len(columns))
                sql = f'INSERT INTO "{self.table}" ({names}) VALUES ({marks})'
                if self.key is not None:
                    others = [c for c in columns if c != self.key]
                    if others:
                        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in others)
                        sql += f' ON CONFLICT("{self.key}") DO UPDATE SET {updates}'
                    else:
                        sql += f' ON CONFLICT("{self.key}") DO NOTHING'
                conn.executemany(sql, [[_column(r.get(c)) for c in columns] for r in rows])
            conn.execute("DELETE FROM _mesh_staging WHERE txn = ?", (txn,))
            conn.execute("INSERT INTO _mesh_commits VALUES (?, ?)", (txn, self.clock.now_ms()))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"sink {self.spec.uid!r}: cannot commit into {path} table {self.table}: {exc}"
            ) from None

    async def clean_up(self, job_id: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        kept = {e["txn"] for e in keep}
        ours = transaction_pattern(
            job_id, self.spec.uid, r"-a\d+-\d+", r"-(?:\d+|end)", subtask=subtask
        )
        conn = self._db()
        names = [row[0] for row in conn.execute("SELECT DISTINCT txn FROM _mesh_staging")]
        doomed = [n for n in names if n not in kept and ours.match(n.removeprefix("~"))]
        conn.executemany("DELETE FROM _mesh_staging WHERE txn = ?", [(n,) for n in doomed])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _column(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value
