"""Exactly-once sinks: two-phase commit driven by checkpoints.

Theory of operation (Flink's TwoPhaseCommitSinkFunction):

* Records go into the *current transaction* (an in-progress file, staging rows).
* At checkpoint barrier n the sink *pre-commits* it: flushed, fsynced, and renamed to
  a name fixed by ``(job, sink uid, subtask, n)``; the pre-commit is recorded in the
  checkpoint's state. A new transaction starts with the next record.
* When checkpoint n completes (NOTIFY_COMPLETE), every pre-committed transaction up to n
  is *committed*: made visible. Committing is idempotent (renaming a file that is
  already there, or a transaction id already recorded, does nothing), so a commit that
  is retried after a failure never duplicates output.
* Restoring a checkpoint commits the transactions it lists (they may or may not have
  been committed before the failure) and deletes what the restored-from job left
  uncommitted (written after that checkpoint: it will be produced again).
* At the end of a bounded input the last transaction is pre-committed and committed
  when every subtask of the job has ended (``commit_final``): a failure before that
  leaves it invisible, and the restored job produces it again.
"""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import anyio
import orjson

from mesh.api import sinks
from mesh.errors import GraphError, RecordError, StateError
from mesh.graph.logical import OperatorSpec
from mesh.node.context import TaskContext
from mesh.node.operators import RestoredState, describe_record
from mesh.node.writers import SinkOperator, encode_lines

__all__ = ["JsonLinesSink", "SqliteSink", "TransactionalSink"]

_FINAL = "end"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TransactionalSink(SinkOperator):
    """The checkpoint-driven transaction bookkeeping shared by exactly-once sinks."""

    def __init__(self, spec: OperatorSpec, ctx: TaskContext) -> None:
        super().__init__(spec)
        self.ctx = ctx
        # Pre-committed transactions not known to be committed, oldest first.
        self.pending: list[dict[str, Any]] = []
        self._seq = itertools.count()

    @property
    def stateful(self) -> bool:
        return True

    def _txn_name(self, checkpoint: int | str) -> str:
        txn = f"{checkpoint:06d}" if isinstance(checkpoint, int) else checkpoint
        return f"{self.ctx.job_id}-{self.spec.uid}-{self.ctx.subtask_index}-{txn}"

    # -- what each sink implements ---------------------------------------------------------

    def _has_current(self) -> bool:
        raise NotImplementedError

    def _precommit(self, txn: str, checkpoint: int | str) -> dict[str, Any]:
        """Make the current transaction durable under ``txn``; returns its state entry."""
        raise NotImplementedError

    def _commit(self, entry: dict[str, Any]) -> None:
        """Make a pre-committed transaction visible (idempotent)."""
        raise NotImplementedError

    def _abort_current(self) -> None:
        """Drop the current transaction."""
        raise NotImplementedError

    def _clean_up(self, old_job: str, keep: list[dict[str, Any]]) -> None:
        """Delete what job ``old_job`` left uncommitted, except the entries in ``keep``."""
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------

    async def initialize(self, restored: RestoredState | None) -> None:
        if restored is None:
            return
        mine = restored.operator_state.get("pending", [])
        for entry in mine:
            self._commit(entry)
        if self.ctx.subtask_index == 0:
            everyone = restored.all_operator_state.get("pending", [])
            for old_job in sorted({e["job"] for e in everyone} | {restored.job_id}):
                self._clean_up(old_job, everyone)

    def snapshot_state(self, checkpoint_id: int) -> dict[str, list[Any]]:
        if self._has_current():
            entry = self._precommit(self._txn_name(checkpoint_id), checkpoint_id)
            entry["checkpoint"] = checkpoint_id
            entry["job"] = self.ctx.job_id
            self.pending.append(entry)
        return {"pending": [dict(e) for e in self.pending]}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        errors = []
        still = []
        for entry in self.pending:
            if entry["checkpoint"] != _FINAL and entry["checkpoint"] <= checkpoint_id:
                try:
                    self._commit(entry)
                except Exception as exc:  # commit the rest, then fail (it is retried)
                    errors.append(exc)
                    still.append(entry)
            else:
                still.append(entry)
        self.pending = still
        if errors:
            raise StateError(f"sink {self.spec.uid!r}: commit failed: {errors[0]}") from errors[0]

    def end_of_input(self) -> bool:
        if self._has_current():
            entry = self._precommit(self._txn_name(_FINAL), _FINAL)
            entry["checkpoint"] = _FINAL
            entry["job"] = self.ctx.job_id
            self.pending.append(entry)
        return bool(self.pending)

    def commit_final(self) -> None:
        for entry in self.pending:
            self._commit(entry)
        self.pending = []

    def commit_all(self) -> None:
        self.end_of_input()
        self.commit_final()

    def abort(self) -> None:
        self._abort_current()


class JsonLinesSink(TransactionalSink):
    """``sinks.JsonLines``: part files that appear (renamed, fsynced) when committed."""

    def __init__(self, spec: OperatorSpec, sink: sinks.JsonLines, ctx: TaskContext) -> None:
        super().__init__(spec, ctx)
        self.directory = ctx.resolve(sink.directory)
        self._file: Any = None
        self._path: Path | None = None

    def _prefix(self, job: str) -> str:
        return f"part-{job}-{self.spec.uid}-"

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraphError(
                f"sink {self.spec.uid!r}: cannot write to {self.directory}: {exc}"
            ) from None

    def process(self, batch: list[Any]) -> list[Any]:
        if self._file is None:
            ctx = self.ctx
            name = (
                f".part-{ctx.job_id}-{self.spec.uid}-{ctx.subtask_index}-a{ctx.attempt}-"
                f"{next(self._seq)}.inprogress"
            )
            self._path = self.directory / name
            try:
                self._file = open(self._path, "wb")  # noqa: SIM115 - closed by precommit/abort
            except OSError as exc:
                raise StateError(
                    f"sink {self.spec.uid!r}: cannot create {self._path}: {exc}"
                ) from None
        self._file.write(encode_lines(self.spec, batch))
        return []

    def _has_current(self) -> bool:
        return self._file is not None

    def _precommit(self, txn: str, checkpoint: int | str) -> dict[str, Any]:
        # If any step fails (a full disk), the transaction stays current: the checkpoint
        # is declined and the next one pre-commits the same file again.
        assert self._file is not None and self._path is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        pending = self.directory / f".part-{txn}-a{self.ctx.attempt}.pending"
        os.replace(self._path, pending)
        try:
            _fsync_dir(self.directory)  # the rename is part of what the checkpoint relies on
        except OSError:
            os.replace(pending, self._path)  # still current (the open file moves with it)
            raise
        self._file.close()
        self._file = None
        self._path = None
        return {"pending": str(pending), "final": str(self.directory / f"part-{txn}.jsonl")}

    def _commit(self, entry: dict[str, Any]) -> None:
        pending, final = Path(entry["pending"]), Path(entry["final"])
        if pending.exists():
            os.replace(pending, final)
            _fsync_dir(final.parent)
        elif not final.exists():
            raise StateError(
                f"sink {self.spec.uid!r}: transaction file {pending} is gone and {final} was "
                "never written: its records are lost"
            )

    def _abort_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def _clean_up(self, old_job: str, keep: list[dict[str, Any]]) -> None:
        kept = {Path(e["pending"]).name for e in keep}
        ours = _ours(
            old_job, self.spec.uid, r"-a\d+-\d+\.inprogress", r"-(?:\d+|end)-a\d+\.pending"
        )
        for path in self.directory.glob(f".part-{glob_escape(old_job)}-*"):
            if path.name not in kept and ours.match(path.name[len(".part-") :]):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._abort_current()


_TYPES = {bool: "INTEGER", int: "INTEGER", float: "REAL", str: "TEXT"}


class SqliteSink(TransactionalSink):
    """``sinks.SQLite``: rows staged per transaction, moved into the table on commit.

    Staged rows are inserted in a worker thread (``settle``, after every batch) through
    their own connection, without fsync; pre-commit renames the staging rows to the
    transaction's name in a transaction that is fsynced (it makes every earlier insert
    durable too). Pre-commit and commit use a second connection on the event loop, so
    a commit can arrive while an insert is under way.
    """

    needs_settle = True

    def __init__(self, spec: OperatorSpec, sink: Any, ctx: TaskContext) -> None:
        super().__init__(spec, ctx)
        self.path = ctx.resolve(sink.path)
        self.table = sink.table
        self.key = sink.key
        self._conn: sqlite3.Connection | None = None  # pre-commit, commit (event loop)
        self._writer: sqlite3.Connection | None = None  # staging inserts (worker thread)
        self._current: str | None = None  # staging name of the current transaction
        self._row = 0  # rows staged in the current transaction so far
        self._unwritten: list[tuple[str, int, str]] = []  # staged rows not inserted yet
        self._columns: list[str] | None = None

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:  # several subtasks open the file at once; one of them switches it to WAL
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            pass
        return conn

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(self.path)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _mesh_staging (txn TEXT NOT NULL, seq INTEGER NOT "
                "NULL, row TEXT NOT NULL, PRIMARY KEY (txn, seq)) STRICT"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _mesh_commits (txn TEXT PRIMARY KEY, "
                "committed_ms INTEGER NOT NULL) STRICT"
            )
            writer = self._connect(self.path)
            writer.execute("PRAGMA synchronous = NORMAL")  # pre-commit makes it durable
        except (OSError, sqlite3.Error) as exc:
            raise GraphError(f"sink {self.spec.uid!r}: cannot open {self.path}: {exc}") from None
        self._conn = conn
        self._writer = writer

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"sink {self.spec.uid!r}: {self.path} is not open")
        return self._conn

    def process(self, batch: list[Any]) -> list[Any]:
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
            ctx = self.ctx
            owner = f"{ctx.job_id}-{self.spec.uid}-{ctx.subtask_index}"
            self._current = f"~{owner}-a{ctx.attempt}-{next(self._seq)}"
            self._row = 0
        rows = encode_lines(self.spec, batch).splitlines()
        txn, start = self._current, self._row
        self._row += len(rows)
        self._unwritten.extend((txn, start + i, row.decode()) for i, row in enumerate(rows))
        return []

    async def settle(self) -> None:
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

    def _has_current(self) -> bool:
        return self._current is not None

    def _precommit(self, txn: str, checkpoint: int | str) -> dict[str, Any]:
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

    def _commit(self, entry: dict[str, Any]) -> None:
        path = Path(entry.get("path", self.path))
        if path == self.path:
            self._commit_in(self._db(), path, entry)
            return
        # A transaction the restored-from job staged in another database (its sink path
        # resolved elsewhere): it commits there.
        try:
            conn = self._connect(path)
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
            conn.execute("INSERT INTO _mesh_commits VALUES (?, ?)", (txn, self.ctx.clock.now_ms()))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"sink {self.spec.uid!r}: cannot commit into {path} table {self.table}: {exc}"
            ) from None

    def _abort_current(self) -> None:
        self._unwritten = []
        if self._current is not None and self._conn is not None:
            try:
                self._conn.execute("DELETE FROM _mesh_staging WHERE txn = ?", (self._current,))
            except sqlite3.Error:
                pass
        self._current = None

    def _clean_up(self, old_job: str, keep: list[dict[str, Any]]) -> None:
        kept = {e["txn"] for e in keep}
        ours = _ours(old_job, self.spec.uid, r"-a\d+-\d+", r"-(?:\d+|end)")
        conn = self._db()
        names = [row[0] for row in conn.execute("SELECT DISTINCT txn FROM _mesh_staging")]
        doomed = [n for n in names if n not in kept and ours.match(n.removeprefix("~"))]
        conn.executemany("DELETE FROM _mesh_staging WHERE txn = ?", [(n,) for n in doomed])

    def close(self) -> None:
        self._abort_current()
        for conn in (self._conn, self._writer):
            if conn is not None:
                conn.close()
        self._conn = self._writer = None


def _ours(job: str, uid: str, *tails: str) -> re.Pattern[str]:
    """Names of transactions of sink ``uid`` of job ``job``: ``<job>-<uid>-<subtask><tail>``.

    Anchored on both ends, so a sink whose uid extends this one's (``out`` and
    ``out-2``) never matches.
    """
    alternatives = "|".join(tails)
    return re.compile(rf"^{re.escape(job)}-{re.escape(uid)}-\d+(?:{alternatives})$")


def _column(value: Any) -> Any:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value
