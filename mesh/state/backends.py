"""Keyed state backends: where one operator subtask keeps its keyed state.

State is organised in *tables*: one per (state name, namespace), each a dict from key to
value — the same dict the operator reads and writes on its hot path. Tables with a TTL
hold ``(value, expires_at_ms)`` pairs (see ``primitives``).

* ``MemoryBackend`` keeps every table in memory. A snapshot copies the tables (a
  shallow dict copy, on the event loop) and encodes and writes them to the snapshot
  file in a worker thread. While a snapshot is being written, state views hand out
  private copies of mutable values (``detach``), so user code that mutates a value in
  place cannot change what the snapshot sees (copy-on-write).
* ``SqliteBackend`` keeps state in a per-subtask SQLite database (WAL) and only a bounded
  cache of keys in memory, so state can outgrow memory. Before each batch the keys it
  touches are loaded in one query (``before_batch``); after it, their values are written
  back in one transaction (``after_batch``); both run in aiosqlite's thread. A snapshot
  pins a read transaction at the barrier (WAL readers see the database as of that
  moment while writing goes on) and copies the rows into the snapshot file in a worker
  thread.

Both write the same snapshot format (``mesh.state.snapshot``) and restore from it, for
any parallelism: a subtask reads the rows of its key-group range from every file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import orjson

from mesh.errors import StateError
from mesh.graph.keygroups import KeyGroupRange
from mesh.state.keys import KeyCodec
from mesh.state.snapshot import KeyedRow, SnapshotReader, write_rows
from mesh.time.clock import Clock

__all__ = ["KeyedStateBackend", "MemoryBackend", "SnapshotJob", "SqliteBackend", "open_backend"]

TableId = tuple[str, str]  # (name, namespace)


class SnapshotJob:
    """The part of a snapshot that runs in a worker thread (``run``), then ``finish``."""

    def __init__(self, run: Callable[[], int], finish: Callable[[], None]) -> None:
        self._run = run
        self._finish = finish

    def run(self) -> int:
        """Write the keyed rows; returns how many. Runs in a worker thread."""
        return self._run()

    def finish(self) -> None:
        """Release what the snapshot held (on the event loop, after ``run``)."""
        self._finish()


class KeyedStateBackend:
    """The keyed state of one operator subtask."""

    #: True when ``before_batch``/``after_batch`` do I/O and must be awaited.
    needs_io = False

    def __init__(self, codec: KeyCodec, clock: Clock) -> None:
        self.codec = codec
        self.clock = clock
        self._tables: dict[TableId, dict[Hashable, Any]] = {}
        self._ttl: dict[TableId, int | None] = {}
        # Snapshots being written that still hold references to live values.
        self.snapshots_in_flight = 0

    def table(self, name: str, namespace: str = "", ttl_ms: int | None = None) -> dict[Any, Any]:
        """The dict holding state ``name`` in ``namespace`` (created empty if new)."""
        table_id = (name, namespace)
        table = self._tables.get(table_id)
        if table is None:
            table = self._tables[table_id] = {}
            self._ttl[table_id] = ttl_ms
        elif ttl_ms is not None and self._ttl[table_id] != ttl_ms:
            if self._ttl[table_id] is None and table:
                raise StateError(
                    f"state {name!r} was used without a TTL and is now asked for with one; "
                    "give each state one TTL setting"
                )
            self._ttl[table_id] = ttl_ms  # restored rows carried deadlines: adopt the TTL
        return table

    def ttl_of(self, name: str, namespace: str = "") -> int | None:
        """The TTL a table was created with."""
        return self._ttl.get((name, namespace))

    def detach(self, value: Any) -> Any:
        """A private copy of a mutable value while a snapshot holds the original."""
        if self.snapshots_in_flight and isinstance(value, dict | list):
            return orjson.loads(orjson.dumps(value))
        return value

    async def open(self) -> None:
        """Acquire files and connections."""

    async def before_batch(self, keys: Iterable[Hashable]) -> None:
        """Make the state of ``keys`` available in the tables."""

    async def after_batch(self) -> None:
        """Persist what the batch changed."""

    def begin_snapshot(self, path: Path) -> SnapshotJob:
        """Capture the state now (on the event loop); the job writes it to ``path``."""
        raise NotImplementedError

    async def restore(self, files: list[Path], groups: KeyGroupRange) -> int:
        """Load the rows of key groups ``groups`` from snapshot ``files``; returns how many."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release files and connections."""

    async def scan(self, name: str, namespace: str = "") -> list[tuple[Hashable, Any]]:
        """Every (key, value) of a table without a TTL, including keys not in memory
        (e.g. to rebuild an index of timers after a restore)."""
        return list(self.table(name, namespace).items())

    async def clear(self, name: str, namespace: str = "") -> None:
        """Forget every key's state ``name`` in ``namespace``, on disk too."""
        self.table(name, namespace).clear()

    # -- shared -----------------------------------------------------------------------------

    def _install_row(self, row: KeyedRow) -> tuple[Hashable, TableId]:
        _, key_text, namespace, name, value_text, expires = row
        key = self.codec.decode(key_text)
        value = orjson.loads(value_text)
        table_id = (name, namespace)
        table = self.table(name, namespace, self._ttl.get(table_id))
        if expires is not None and self._ttl.get(table_id) is None:
            self._ttl[table_id] = 0  # a TTL table whose TTL the operator will set again
        table[key] = (value, expires) if expires is not None else value
        return key, table_id

    def _rows_of(
        self, tables: list[tuple[TableId, int | None, dict[Any, Any]]]
    ) -> Iterator[KeyedRow]:
        now = self.clock.now_ms()
        encode = self.codec.encode
        dumps = orjson.dumps
        for (name, namespace), ttl, table in tables:
            for key, value in table.items():
                expires = None
                if ttl is not None:
                    value, expires = value
                    if expires <= now:
                        continue
                key_group, key_text = encode(key)
                try:
                    value_text = dumps(value).decode()
                except TypeError as exc:
                    raise StateError(
                        f"state {name!r} of key {key_text} holds a value that is not JSON: {exc}"
                    ) from None
                yield key_group, key_text, namespace, name, value_text, expires


class MemoryBackend(KeyedStateBackend):
    """All keyed state in dicts; snapshots are copied on the loop, written in a thread."""

    def begin_snapshot(self, path: Path) -> SnapshotJob:
        copies = [
            (table_id, self._ttl[table_id], dict(table)) for table_id, table in self._tables.items()
        ]
        self.snapshots_in_flight += 1

        def run() -> int:
            count = 0

            def counted() -> Iterator[KeyedRow]:
                nonlocal count
                for row in self._rows_of(copies):
                    count += 1
                    yield row

            write_rows(path, counted())
            return count

        def finish() -> None:
            self.snapshots_in_flight -= 1

        return SnapshotJob(run, finish)

    async def restore(self, files: list[Path], groups: KeyGroupRange) -> int:
        def load() -> list[KeyedRow]:
            rows: list[KeyedRow] = []
            for path in files:
                with SnapshotReader(path) as reader:
                    rows.extend(reader.keyed_rows(groups))
            return rows

        rows = await anyio.to_thread.run_sync(load)
        for row in rows:
            try:
                self._install_row(row)
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                raise StateError(
                    f"snapshot of {', '.join(map(str, files))}: key {row[1]!r} state "
                    f"{row[3]!r} cannot be restored: {exc}"
                ) from None
        return len(rows)


_WORKING_SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
-- A rowid table: values can be large, and WITHOUT ROWID suits only small rows.
CREATE TABLE IF NOT EXISTS state (
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key_group INTEGER NOT NULL,
    value TEXT NOT NULL,
    expires_at INTEGER,
    UNIQUE (key, name, namespace)
) STRICT;
"""

_LOAD_CHUNK = 500


class SqliteBackend(KeyedStateBackend):
    """Keyed state in a SQLite database with a bounded in-memory cache of keys."""

    needs_io = True

    def __init__(
        self,
        path: Path,
        codec: KeyCodec,
        clock: Clock,
        *,
        cache_keys: int = 20_000,
        cache_bytes: int = 16 << 20,
    ) -> None:
        super().__init__(codec, clock)
        self.path = path
        # The cache holds at most this many keys, and at most about this many bytes of
        # state (counted as encoded JSON): large values mean fewer keys.
        self.cache_keys = cache_keys
        self.cache_bytes = cache_bytes
        self._db: aiosqlite.Connection | None = None
        # Keys whose state is in the tables (all of their tables), least recent first,
        # with the size of their encoded state when last written (0 until then).
        self._resident: dict[Hashable, int] = {}
        self._resident_bytes = 0
        # Keys the current batch touches: written back by after_batch.
        self._touched: list[Hashable] = []

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path)
            await self._db.executescript(_WORKING_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {self.path}: {exc}") from None

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StateError(f"state database {self.path} is not open")
        return self._db

    async def before_batch(self, keys: Iterable[Hashable]) -> None:
        resident = self._resident
        touched = list(dict.fromkeys(keys))
        self._touched = touched
        missing = [k for k in touched if k not in resident]
        for k in touched:  # refresh recency
            resident[k] = resident.pop(k, 0)
        if not missing:
            return
        encode = self.codec.encode
        texts = {encode(k)[1]: k for k in missing}
        db = self._conn()
        names = list(texts)
        for start in range(0, len(names), _LOAD_CHUNK):
            chunk = names[start : start + _LOAD_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with db.execute(
                "SELECT key_group, key, namespace, name, value, expires_at FROM state "
                f"WHERE key IN ({marks})",
                chunk,
            ) as cursor:
                async for row in cursor:
                    self._install_row(
                        (int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), row[5])
                    )

    async def after_batch(self) -> None:
        touched = self._touched
        if not touched:
            return
        encode = self.codec.encode
        dumps = orjson.dumps
        upserts = []
        deletes = []
        resident = self._resident
        for key in touched:
            key_group, key_text = encode(key)
            size = len(key_text)
            for (name, namespace), table in self._tables.items():
                if key in table:
                    value = table[key]
                    expires = None
                    if self._ttl[(name, namespace)] is not None:
                        value, expires = value
                    try:
                        text = dumps(value).decode()
                    except TypeError as exc:
                        raise StateError(
                            f"state {name!r} of key {key_text} holds a value that is not JSON: "
                            f"{exc}"
                        ) from None
                    upserts.append((key_text, name, namespace, key_group, text, expires))
                    size += len(text)
                else:
                    deletes.append((key_text, name, namespace))
            if key in resident:
                self._resident_bytes += size - resident[key]
                resident[key] = size
        db = self._conn()
        try:
            await db.executemany(
                "INSERT INTO state VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key, name, namespace) "
                "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                upserts,
            )
            if deletes:
                await db.executemany(
                    "DELETE FROM state WHERE key = ? AND name = ? AND namespace = ?", deletes
                )
            await db.commit()
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state database {self.path}: {exc}") from None
        self._touched = []
        self._evict()

    def _evict(self) -> None:
        resident = self._resident
        if len(resident) <= self.cache_keys and self._resident_bytes <= self.cache_bytes:
            return
        tables = list(self._tables.values())
        oldest = iter(list(resident))
        while len(resident) > self.cache_keys or self._resident_bytes > self.cache_bytes:
            key = next(oldest, None)
            if key is None:
                break
            self._resident_bytes -= resident.pop(key)
            for table in tables:
                table.pop(key, None)

    async def clear(self, name: str, namespace: str = "") -> None:
        await self.after_batch()  # nothing of it may be written back later
        self.table(name, namespace).clear()
        db = self._conn()
        try:
            await db.execute(
                "DELETE FROM state WHERE name = ? AND namespace = ?", (name, namespace)
            )
            await db.commit()
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state database {self.path}: {exc}") from None

    async def scan(self, name: str, namespace: str = "") -> list[tuple[Hashable, Any]]:
        found: dict[Hashable, Any] = {}
        decode = self.codec.decode
        await self.after_batch()  # what is only in the cache is written first
        async with self._conn().execute(
            "SELECT key, value FROM state WHERE name = ? AND namespace = ?", (name, namespace)
        ) as cursor:
            async for key_text, value_text in cursor:
                found[decode(str(key_text))] = orjson.loads(value_text)
        return list(found.items())

    def begin_snapshot(self, path: Path) -> SnapshotJob:
        # Pin a read transaction now: it sees the database as of this barrier, while the
        # aiosqlite connection goes on writing (WAL).
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("ATTACH DATABASE ? AS snapshot", (str(path),))
            # The snapshot file is referenced only once complete and fsynced (file_info):
            # no journal needed while it is written.
            conn.execute("PRAGMA snapshot.journal_mode = OFF")
            conn.execute("PRAGMA snapshot.synchronous = OFF")
            conn.execute("BEGIN")
            # The first read pins the WAL read mark (cheap: one row, not a scan).
            conn.execute("SELECT 1 FROM main.state LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise StateError(f"cannot snapshot state database {self.path}: {exc}") from None

        def run() -> int:
            now = self.clock.now_ms()
            cursor = conn.execute(
                "INSERT INTO snapshot.keyed_state SELECT key_group, key, namespace, name, value, "
                "expires_at FROM main.state WHERE expires_at IS NULL OR expires_at > ?",
                (now,),
            )
            count = cursor.rowcount
            conn.execute("COMMIT")
            return count

        def finish() -> None:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute("DETACH DATABASE snapshot")
            except sqlite3.Error:
                pass
            conn.close()

        return SnapshotJob(run, finish)

    async def restore(self, files: list[Path], groups: KeyGroupRange) -> int:
        def load() -> int:
            conn = sqlite3.connect(self.path, isolation_level=None)
            count = 0
            try:
                for path in files:
                    conn.execute("ATTACH DATABASE ? AS old", (str(path),))
                    conn.execute("BEGIN")
                    cursor = conn.execute(
                        "INSERT OR REPLACE INTO main.state SELECT key, name, namespace, "
                        "key_group, value, expires_at FROM old.keyed_state "
                        "WHERE key_group >= ? AND key_group < ?",
                        (groups.start, groups.end),
                    )
                    count += cursor.rowcount
                    conn.execute("COMMIT")
                    conn.execute("DETACH DATABASE old")
            finally:
                conn.close()
            return count

        await self._conn().commit()
        try:
            return await anyio.to_thread.run_sync(load)
        except sqlite3.Error as exc:
            raise StateError(f"cannot restore into {self.path}: {exc}") from None

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()


def open_backend(kind: str, *, path: Path, codec: KeyCodec, clock: Clock) -> KeyedStateBackend:
    """A backend by name: ``"memory"`` or ``"sqlite"`` (whose database lives at ``path``)."""
    if kind == "memory":
        return MemoryBackend(codec, clock)
    if kind == "sqlite":
        return SqliteBackend(path, codec, clock)
    raise StateError(f"unknown state backend {kind!r} (use 'memory' or 'sqlite')")
