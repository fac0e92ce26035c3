"""Keyed state: snapshot files, checkpoint metadata, key codec, backends and primitives
(mesh/state/*)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import CheckpointError, StateError
from mesh.graph.keygroups import KeyGroupRange, canonical_key, key_group_for, key_group_range
from mesh.protocol.messages import SnapshotFile
from mesh.state.backends import KeyedStateBackend, MemoryBackend, SqliteBackend, open_backend
from mesh.state.keys import KeyCodec
from mesh.state.metadata import (
    METADATA_FILE,
    CheckpointMetadata,
    OperatorFiles,
    latest_valid,
    load_metadata,
    write_metadata,
)
from mesh.state.primitives import StateAccessor
from mesh.state.snapshot import SnapshotReader, create_snapshot_file, file_info, write_rows
from mesh.time.clock import ManualClock

TIMEOUT = 10
BACKENDS = ["memory", "sqlite"]


def _read_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT key_group, key, namespace, name, value, expires_at FROM keyed_state "
            "ORDER BY key_group, key, namespace, name"
        ).fetchall()
    finally:
        conn.close()


# -- snapshot files ---------------------------------------------------------------------------


def test_snapshot_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "op-0.db"
    create_snapshot_file(
        path,
        {"uid": "count", "subtask": 0, "key_groups": [0, 64]},
        {"splits": [{"file": "a.txt", "offset": 10}, {"file": "b.txt", "offset": 0}], "x": [1]},
    )
    rows = [
        (5, '"b"', "", "count", "2", None),
        (3, '"a"', "", "count", "1", 1234),
        (3, '"a"', "w1", "sum", '{"n":[1,2]}', None),
    ]
    write_rows(path, rows)
    with SnapshotReader(path) as reader:
        assert reader.meta() == {"uid": "count", "subtask": 0, "key_groups": [0, 64]}
        assert reader.operator_state() == {
            "splits": [{"file": "a.txt", "offset": 10}, {"file": "b.txt", "offset": 0}],
            "x": [1],
        }
        read = list(reader.keyed_rows(KeyGroupRange(0, 128)))
    assert sorted(read) == sorted(rows)
    assert [r[0] for r in read] == [3, 3, 5]


def test_create_snapshot_file_replaces_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "op-0.db"
    create_snapshot_file(path, {"v": 1}, {})
    write_rows(path, [(1, "1", "", "s", "1", None)])
    create_snapshot_file(path, {"v": 2}, {})
    with SnapshotReader(path) as reader:
        assert reader.meta() == {"v": 2}
        assert list(reader.keyed_rows(KeyGroupRange(0, 128))) == []


@pytest.mark.parametrize(
    "row",
    [
        ("three", '"a"', "", "s", "1", None),  # key group as text
        (3, '"a"', "", "s", b"\x00\x01", None),  # value as a blob
        (3, '"a"', "", "s", "1", "soon"),  # deadline as text
        (-1, '"a"', "", "s", "1", None),  # negative key group
        (3, None, "", "s", "1", None),  # no key
    ],
)
def test_strict_schema_rejects_wrong_rows(tmp_path: Path, row: tuple[Any, ...]) -> None:
    path = tmp_path / "op-0.db"
    create_snapshot_file(path, {}, {})
    with pytest.raises(sqlite3.IntegrityError):
        write_rows(path, [(1, '"ok"', "", "s", "1", None), row])
    assert _read_rows(path) == []  # one transaction: nothing was written


def test_keyed_rows_returns_only_the_asked_range_in_order(tmp_path: Path) -> None:
    path = tmp_path / "op-0.db"
    create_snapshot_file(path, {}, {})
    rows = [
        (kg, f'"k{kg}-{i}"', "", "s", str(i), None) for kg in (9, 0, 7, 3, 4, 8) for i in (2, 1)
    ]
    write_rows(path, rows)
    with SnapshotReader(path) as reader:
        read = list(reader.keyed_rows(KeyGroupRange(3, 8)))
        assert list(reader.keyed_rows(KeyGroupRange(1, 3))) == []
    assert sorted(read) == sorted(r for r in rows if 3 <= r[0] < 8)
    groups = [r[0] for r in read]
    assert groups == sorted(groups)
    assert set(groups) == {3, 4, 7}


def test_snapshot_reader_refuses_a_file_that_is_not_a_snapshot(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite at all" * 50)
    with pytest.raises(StateError, match=r"bogus\.db"):
        SnapshotReader(bogus)
    with pytest.raises(StateError, match=r"missing\.db"):
        SnapshotReader(tmp_path / "missing.db")


def test_file_info_reports_size_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "op-0.db"
    create_snapshot_file(path, {"a": 1}, {})
    info = file_info(path)
    data = path.read_bytes()
    assert info.path == str(path)
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()


# -- checkpoint metadata ----------------------------------------------------------------------


def _checkpoint(directory: Path, checkpoint_id: int = 4) -> CheckpointMetadata:
    """Write two state files and the metadata listing them."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for index, content in enumerate([b"first file", b"second, longer file"]):
        name = f"count-{index}.db"
        (directory / name).write_bytes(content)
        files.append(
            SnapshotFile(
                uid="count",
                subtask=index,
                file=name,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                key_groups=(index * 64, index * 64 + 64),
            )
        )
    metadata = CheckpointMetadata(
        job_id="j1",
        job_name="demo",
        checkpoint_id=checkpoint_id,
        kind="checkpoint",
        created_ms=1700000000000,
        operators={
            "count": OperatorFiles(parallelism=2, max_parallelism=128, files=tuple(files)),
            "src": OperatorFiles(parallelism=1, max_parallelism=128, files=()),
        },
    )
    write_metadata(directory, metadata)
    return metadata


def test_metadata_round_trip(tmp_path: Path) -> None:
    metadata = _checkpoint(tmp_path / "chk-4")
    assert load_metadata(tmp_path / "chk-4") == metadata
    assert metadata.size == len(b"first file") + len(b"second, longer file")
    assert sorted(p.name for p in (tmp_path / "chk-4").iterdir()) == [
        METADATA_FILE,
        "count-0.db",
        "count-1.db",
    ]


def test_load_metadata_refuses_a_missing_metadata_file(tmp_path: Path) -> None:
    (tmp_path / "chk-1").mkdir()
    with pytest.raises(CheckpointError, match=rf"chk-1.*{METADATA_FILE} is missing"):
        load_metadata(tmp_path / "chk-1")


def test_load_metadata_refuses_garbage(tmp_path: Path) -> None:
    (tmp_path / "chk-1").mkdir()
    (tmp_path / "chk-1" / METADATA_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{METADATA_FILE} is not valid checkpoint metadata"):
        load_metadata(tmp_path / "chk-1")


def test_load_metadata_refuses_a_missing_file(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "chk-4")
    (tmp_path / "chk-4" / "count-1.db").unlink()
    with pytest.raises(CheckpointError, match=r"count-1\.db.*'count'.*subtask 1.*missing"):
        load_metadata(tmp_path / "chk-4")
    assert load_metadata(tmp_path / "chk-4", verify=False).checkpoint_id == 4


def test_load_metadata_refuses_a_file_with_the_wrong_size(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "chk-4")
    (tmp_path / "chk-4" / "count-0.db").write_bytes(b"first file, and more")
    with pytest.raises(CheckpointError, match=r"count-0\.db has 20 bytes, the metadata says 10"):
        load_metadata(tmp_path / "chk-4")


def test_load_metadata_refuses_a_file_with_the_wrong_checksum(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "chk-4")
    (tmp_path / "chk-4" / "count-1.db").write_bytes(b"second, LONGER file")  # same size
    with pytest.raises(CheckpointError, match=r"count-1\.db has the wrong checksum"):
        load_metadata(tmp_path / "chk-4")


def test_latest_valid_picks_the_newest_valid_checkpoint(tmp_path: Path) -> None:
    for n in (2, 9, 10):
        _checkpoint(tmp_path / f"chk-{n}", n)
    _checkpoint(tmp_path / "chk-11", 11)
    (tmp_path / "chk-11" / "count-0.db").write_bytes(b"FIRST FILE")  # damaged
    (tmp_path / "chk-12").mkdir()  # never completed
    (tmp_path / "savepoint-x-99").mkdir()  # not a checkpoint of the job
    (tmp_path / "chk-13").write_text("a file, not a directory")
    directory, metadata, skipped = latest_valid(tmp_path)
    assert directory == tmp_path / "chk-10"  # numeric order: 10 > 9
    assert metadata.checkpoint_id == 10
    assert len(skipped) == 2
    assert "chk-12" in skipped[0] and METADATA_FILE in skipped[0]
    assert "chk-11" in skipped[1] and "count-0.db" in skipped[1]


def test_latest_valid_raises_when_none_is_usable(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        latest_valid(tmp_path / "nothing-here")
    _checkpoint(tmp_path / "chk-1", 1)
    (tmp_path / "chk-1" / "count-1.db").unlink()
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*skipped.*count-1\.db"):
        latest_valid(tmp_path)


# -- keys -------------------------------------------------------------------------------------

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_scalars = st.one_of(st.text(max_size=10), _int64)
_keys = st.one_of(
    _scalars,
    st.tuples(_scalars, _scalars),
    st.lists(st.one_of(_scalars, st.tuples(_scalars)), max_size=3).map(tuple),
)


@given(key=_keys, max_parallelism=st.integers(min_value=1, max_value=1024))
def test_key_codec_round_trip_and_key_group(key: Hashable, max_parallelism: int) -> None:
    codec = KeyCodec(max_parallelism)
    key_group, text = codec.encode(key)
    assert key_group == key_group_for(key, max_parallelism)
    assert 0 <= key_group < max_parallelism
    assert codec.decode(text) == canonical_key(key)
    assert codec.encode(key) == (key_group, text)  # memoised: the same answer


def test_key_codec_decodes_lists_as_tuples_and_folds_bools() -> None:
    codec = KeyCodec(128)
    assert codec.decode('["a",[1,2]]') == ("a", (1, 2))
    assert codec.decode("true") == 1
    assert codec.decode("2.0") == 2
    assert codec.encode(("a", 1)) == (key_group_for(["a", 1], 128), '["a",1]')


def test_key_codec_memo_is_bounded() -> None:
    codec = KeyCodec(64, memo_limit=3)
    for key in range(10):
        assert codec.encode(key) == (key_group_for(key, 64), str(key))
    assert len(codec._memo) <= 3


def test_key_codec_text_is_canonical_for_equal_keys() -> None:
    texts = {KeyCodec(128).encode(key)[1] for key in (1, 1.0, True)}
    assert texts == {"1"}


def test_key_codec_encodes_ints_beyond_64_bits() -> None:
    codec = KeyCodec(128)
    key_group, text = codec.encode(2**70)
    assert key_group == key_group_for(2**70, 128)
    assert codec.decode(text) == 2**70


# -- backends ---------------------------------------------------------------------------------

Make = Callable[..., Awaitable[KeyedStateBackend]]


@asynccontextmanager
async def _backends(kind: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Make]:
    """A factory of opened backends of ``kind``; all are closed at the end."""
    made: list[KeyedStateBackend] = []

    async def make(
        max_parallelism: int = 128, cache_keys: int = 20_000, cache_bytes: int = 16 << 20
    ) -> KeyedStateBackend:
        codec = KeyCodec(max_parallelism)
        backend: KeyedStateBackend
        if kind == "memory":
            backend = MemoryBackend(codec, clock)
        else:
            path = tmp_path / "work" / f"state-{len(made)}.db"
            backend = SqliteBackend(
                path, codec, clock, cache_keys=cache_keys, cache_bytes=cache_bytes
            )
        made.append(backend)
        await backend.open()
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.close()


async def _write(
    backend: KeyedStateBackend,
    name: str,
    values: dict[Any, Any],
    *,
    namespace: str = "",
    ttl_ms: int | None = None,
) -> None:
    """One batch writing ``values`` (tables of TTL state hold (value, deadline) pairs)."""
    await backend.before_batch(values)
    table = backend.table(name, namespace, ttl_ms)
    for key, value in values.items():
        if ttl_ms is None:
            table[key] = value
        else:
            table[key] = (value, backend.clock.now_ms() + ttl_ms)
    await backend.after_batch()


async def _delete(backend: KeyedStateBackend, name: str, keys: list[Any]) -> None:
    await backend.before_batch(keys)
    table = backend.table(name)
    for key in keys:
        del table[key]
    await backend.after_batch()


async def _read(
    backend: KeyedStateBackend, name: str, keys: Iterable[Any], namespace: str = ""
) -> dict[Any, Any]:
    """The entries of ``keys`` in table ``name`` (loading them first, like a batch)."""
    keys = list(keys)
    await backend.before_batch(keys)
    table = backend.table(name, namespace, backend.ttl_of(name, namespace))
    found = {key: table[key] for key in keys if key in table}
    await backend.after_batch()
    return found


async def _snapshot(backend: KeyedStateBackend, path: Path) -> int:
    create_snapshot_file(path, {"uid": "op"}, {})
    job = backend.begin_snapshot(path)
    try:
        return await anyio.to_thread.run_sync(job.run)
    finally:
        job.finish()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_state_survives_snapshot_and_restore(kind: str, tmp_path: Path) -> None:
    clock = ManualClock(1000)
    values = {"alice": 3, 7: {"n": [1, 2]}, ("eu", 1): "x", "none": None}
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            backend = await make()
            await _write(backend, "count", values)
            await _write(backend, "sum", {"alice": 1.5}, namespace="window-1")
            await _write(backend, "count", {"bob": 1})
            await _delete(backend, "count", ["bob"])
            path = tmp_path / "chk-1" / "op-0.db"
            assert await _snapshot(backend, path) == 5

            fresh = await make()
            assert await fresh.restore([path], KeyGroupRange(0, 128)) == 5
            assert await _read(fresh, "count", [*values, "bob"]) == values
            assert await _read(fresh, "sum", ["alice"], "window-1") == {"alice": 1.5}
            assert backend.snapshots_in_flight == 0

    codec = KeyCodec(128)
    rows = _read_rows(path)
    assert len(rows) == 5
    for key_group, key_text, _, _, _, expires in rows:
        assert key_group == key_group_for(codec.decode(key_text), 128)
        assert expires is None


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_restore_from_several_files_rescales_2_to_3(kind: str, tmp_path: Path) -> None:
    max_parallelism = 16
    keys: list[Any] = (
        [f"user-{i}" for i in range(40)] + list(range(40)) + [("t", i) for i in range(8)]
    )
    clock = ManualClock(0)
    files = []
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            for old in range(2):
                groups = key_group_range(old, 2, max_parallelism)
                backend = await make(max_parallelism)
                mine = {k: f"v-{k}" for k in keys if key_group_for(k, max_parallelism) in groups}
                assert mine  # both old subtasks hold state
                await _write(backend, "s", mine)
                await _write(backend, "other", {k: 1 for k in mine}, namespace="ns")
                path = tmp_path / "chk-1" / f"op-{old}.db"
                await _snapshot(backend, path)
                files.append(path)

            owners: dict[Any, list[int]] = {k: [] for k in keys}
            for new in range(3):
                groups = key_group_range(new, 3, max_parallelism)
                backend = await make(max_parallelism)
                expected = [k for k in keys if key_group_for(k, max_parallelism) in groups]
                assert await backend.restore(files, groups) == 2 * len(expected)
                found = await _read(backend, "s", keys)
                assert found == {k: f"v-{k}" for k in expected}
                assert await _read(backend, "other", keys, "ns") == {k: 1 for k in expected}
                for key in found:
                    owners[canonical_key(key)].append(new)
    assert all(len(subtasks) == 1 for subtasks in owners.values()), owners


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_snapshot_right_after_restore_keeps_the_restored_state(
    kind: str, tmp_path: Path
) -> None:
    clock = ManualClock(0)
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            backend = await make()
            await _write(backend, "s", {"a": 1, "b": [2]})
            await _write(backend, "t", {"c": "x"}, ttl_ms=5000)
            first = tmp_path / "chk-1.db"
            await _snapshot(backend, first)
            # No record touches the keys before the next checkpoint.
            fresh = await make()
            await fresh.restore([first], KeyGroupRange(0, 128))
            second = tmp_path / "chk-2.db"
            assert await _snapshot(fresh, second) == 3
    assert _read_rows(second) == _read_rows(first)
    assert [row[5] for row in _read_rows(second) if row[3] == "t"] == [5000]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_ttl_entries_that_expired_are_not_in_the_snapshot(kind: str, tmp_path: Path) -> None:
    clock = ManualClock(10_000)
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            backend = await make()
            accessor = StateAccessor(backend, lambda ttl: ttl)
            await backend.before_batch(["old", "new"])
            accessor.key = "old"
            accessor.value("seen", ttl=1000).set("o")  # expires at 11_000
            await backend.after_batch()
            clock.advance(600)
            await backend.before_batch(["new"])
            accessor.key = "new"
            accessor.value("seen", ttl=1000).set("n")  # expires at 11_600
            await backend.after_batch()
            clock.advance(400)  # now 11_000: "old" just expired
            path = tmp_path / "op-0.db"
            assert await _snapshot(backend, path) == 1
            assert _read_rows(path) == [
                (key_group_for("new", 128), '"new"', "", "seen", '"n"', 11_600)
            ]

            fresh = await make()
            await fresh.restore([path], KeyGroupRange(0, 128))
            await fresh.before_batch(["new", "old"])
            restored = StateAccessor(fresh, lambda ttl: ttl)
            restored.key = "new"
            assert restored.value("seen", ttl=1000).get() == "n"
            restored.key = "old"
            assert restored.value("seen", ttl=1000).get() is None
            clock.advance(600)
            restored.key = "new"
            assert restored.value("seen", ttl=1000).get() is None  # expired now
            await fresh.after_batch()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_snapshot_is_consistent_with_later_changes(kind: str, tmp_path: Path) -> None:
    clock = ManualClock(0)
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            backend = await make()
            await _write(backend, "s", {"a": 1, "b": 2, "c": 3})
            path = tmp_path / "op-0.db"
            create_snapshot_file(path, {}, {})
            job = backend.begin_snapshot(path)
            try:
                await _write(backend, "s", {"a": 100, "d": 4})
                await _delete(backend, "s", ["b"])
                await _write(backend, "t", {"a": "new table"})
                assert await anyio.to_thread.run_sync(job.run) == 3
            finally:
                job.finish()
            assert await _read(backend, "s", "abcd") == {"a": 100, "c": 3, "d": 4}

    rows = _read_rows(path)
    assert sorted((key, name, value) for _, key, _, name, value, _ in rows) == [
        ('"a"', "s", "1"),
        ('"b"', "s", "2"),
        ('"c"', "s", "3"),
    ]


@pytest.mark.asyncio
async def test_memory_snapshot_is_not_changed_by_in_place_mutation(tmp_path: Path) -> None:
    clock = ManualClock(0)
    backend = MemoryBackend(KeyCodec(128), clock)
    accessor = StateAccessor(backend, lambda ttl: ttl)
    accessor.key = "k"
    accessor.value("doc").set({"items": [1], "n": 1})
    accessor.list("log").add({"seen": 1})
    accessor.map("m").put("x", [1])
    accessor.value("timed", ttl=5000).set({"t": 1})
    path = tmp_path / "op-0.db"
    create_snapshot_file(path, {}, {})
    job = backend.begin_snapshot(path)
    try:
        assert backend.snapshots_in_flight == 1
        doc = accessor.value("doc").get()
        doc["items"].append(2)
        doc["n"] = 2
        accessor.list("log").get()[0]["seen"] = 2
        accessor.map("m").get("x").append(2)
        accessor.value("timed", ttl=5000).get()["t"] = 2
        with anyio.fail_after(TIMEOUT):
            assert await anyio.to_thread.run_sync(job.run) == 4
    finally:
        job.finish()
    assert backend.snapshots_in_flight == 0
    # The live state has the changes made to the private copies...
    assert accessor.value("doc").get() == {"items": [1, 2], "n": 2}
    assert accessor.map("m").get("x") == [1, 2]
    assert accessor.value("timed", ttl=5000).get() == {"t": 2}
    assert backend.table("timed", "", 5000)["k"][1] == 5000  # the deadline was kept
    # ...the snapshot has the values as of begin_snapshot.
    values = {name: value for _, _, _, name, value, _ in _read_rows(path)}
    assert values == {
        "doc": '{"items":[1],"n":1}',
        "log": '[{"seen":1}]',
        "m": '{"x":[1]}',
        "timed": '{"t":1}',
    }


@pytest.mark.asyncio
async def test_sqlite_backend_evicts_beyond_cache_keys_and_reloads(tmp_path: Path) -> None:
    clock = ManualClock(0)
    with anyio.fail_after(TIMEOUT):
        async with _backends("sqlite", tmp_path, clock) as make:
            backend = await make(cache_keys=2)
            assert isinstance(backend, SqliteBackend)
            for key in ("a", "b", "c"):
                await _write(backend, "s", {key: f"v{key}"})
                await _write(backend, "t", {key: [key]})
            table = backend.table("s")
            assert set(table) == {"b", "c"}  # "a" was the least recently used
            assert "a" not in backend.table("t")
            await backend.before_batch(["a"])
            assert table["a"] == "va"
            assert backend.table("t")["a"] == ["a"]
            table["a"] = "changed"
            await backend.after_batch()
            assert set(table) == {"c", "a"}
            # "b" was evicted now; its value comes back from the database.
            assert await _read(backend, "s", ["b", "a"]) == {"b": "vb", "a": "changed"}


@pytest.mark.asyncio
async def test_sqlite_backend_cache_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    clock = ManualClock(0)
    with anyio.fail_after(TIMEOUT):
        async with _backends("sqlite", tmp_path, clock) as make:
            backend = await make(cache_keys=1000, cache_bytes=2500)
            assert isinstance(backend, SqliteBackend)
            big = "x" * 1000
            for key in ("a", "b", "c", "d"):
                await _write(backend, "s", {key: big})
            # About 1 KB each: only the two most recent fit in 2,500 bytes.
            assert set(backend.table("s")) == {"c", "d"}
            await _write(backend, "s", {"e": "small"})
            assert set(backend.table("s")) == {"c", "d", "e"}
            assert await _read(backend, "s", ["a"]) == {"a": big}  # reloaded from disk
            assert set(backend.table("s")) == {"d", "e", "a"}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_value_that_is_not_json_fails_naming_the_state(kind: str, tmp_path: Path) -> None:
    clock = ManualClock(0)
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            backend = await make()
            await backend.before_batch(["k"])
            backend.table("bad_state")["k"] = {1, 2}
            if kind == "sqlite":  # values are encoded when the batch is written back
                with pytest.raises(StateError, match="state 'bad_state'"):
                    await backend.after_batch()
                return
            await backend.after_batch()
            path = tmp_path / "op-0.db"
            create_snapshot_file(path, {}, {})
            job = backend.begin_snapshot(path)
            try:
                with pytest.raises(StateError, match=r"state 'bad_state' of key \"k\""):
                    await anyio.to_thread.run_sync(job.run)
            finally:
                job.finish()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "kind",
    [
        "memory",
        "sqlite",
    ],
)
async def test_equal_keys_share_state_after_restore(kind: str, tmp_path: Path) -> None:
    clock = ManualClock(0)
    with anyio.fail_after(TIMEOUT):
        async with _backends(kind, tmp_path, clock) as make:
            backend = await make()
            await _write(backend, "s", {1.0: "one"})
            path = tmp_path / "op-0.db"
            await _snapshot(backend, path)
            fresh = await make()
            await fresh.restore([path], KeyGroupRange(0, 128))
            assert await _read(fresh, "s", [1]) == {1: "one"}


def test_open_backend_by_name(tmp_path: Path) -> None:
    codec = KeyCodec(128)
    clock = ManualClock(0)
    assert type(open_backend("memory", path=tmp_path / "x.db", codec=codec, clock=clock)) is (
        MemoryBackend
    )
    sqlite_backend = open_backend("sqlite", path=tmp_path / "x.db", codec=codec, clock=clock)
    assert isinstance(sqlite_backend, SqliteBackend) and sqlite_backend.path == tmp_path / "x.db"
    with pytest.raises(StateError, match="'rocks'"):
        open_backend("rocks", path=tmp_path / "x.db", codec=codec, clock=clock)


def test_table_refuses_a_ttl_for_state_used_without_one() -> None:
    backend = MemoryBackend(KeyCodec(128), ManualClock(0))
    backend.table("s")["k"] = 1
    with pytest.raises(StateError, match=r"'s'.*without a TTL"):
        backend.table("s", "", 1000)
    assert backend.table("s") == {"k": 1}
    backend.table("empty")
    backend.table("empty", "", 1000)
    assert backend.ttl_of("empty") == 1000


# -- primitives -------------------------------------------------------------------------------


def _accessor(clock: ManualClock | None = None) -> tuple[StateAccessor, MemoryBackend]:
    backend = MemoryBackend(KeyCodec(128), clock or ManualClock(0))
    return StateAccessor(backend, lambda ttl: ttl), backend


def test_value_state_per_key_with_default() -> None:
    state, _ = _accessor()
    state.key = "a"
    assert state.value("v").get() is None
    assert state.value("v", default=0).get() == 0
    state.value("v", default=0).set(5)
    state.key = "b"
    assert state.value("v", default=0).get() == 0
    state.value("v").set("bee")
    state.key = "a"
    assert state.value("v", default=0).get() == 5
    state.value("v").clear()
    assert state.value("v", default=-1).get() == -1
    state.key = "b"
    assert state.value("v").get() == "bee"


def test_list_state() -> None:
    state, _ = _accessor()
    state.key = 1
    assert state.list("l").get() == []
    state.list("l").add("x")
    state.list("l").add("y")
    got = state.list("l").get()
    assert got == ["x", "y"]
    got.append("not stored")
    assert state.list("l").get() == ["x", "y"]
    state.key = 2
    assert state.list("l").get() == []
    state.list("l").update(["z"])
    assert state.list("l").get() == ["z"]
    state.key = 1
    state.list("l").clear()
    assert state.list("l").get() == []


def test_map_state() -> None:
    state, _ = _accessor()
    state.key = "k"
    m = state.map("m")
    assert m.get("a") is None
    assert m.get("a", 0) == 0
    assert not m.contains("a")
    m.put("a", 1)
    m.put("b", {"x": 2})
    assert m.contains("a")
    assert m.get("b") == {"x": 2}
    assert list(m.items()) == [("a", 1), ("b", {"x": 2})]
    assert list(m.keys()) == ["a", "b"]
    assert list(m.values()) == [1, {"x": 2}]
    m.remove("a")
    m.remove("absent")
    assert list(m.keys()) == ["b"]
    state.key = "other"
    assert list(state.map("m").items()) == []
    state.key = "k"
    state.map("m").clear()
    assert list(state.map("m").keys()) == []


@pytest.mark.parametrize("bad", [1, None, ("a",), 2.5])
def test_map_state_refuses_keys_that_are_not_strings(bad: Any) -> None:
    state, _ = _accessor()
    state.key = "k"
    with pytest.raises(StateError, match=r"MapState 'm'.*strings"):
        state.map("m").put(bad, 1)
    assert list(state.map("m").items()) == []


def test_reducing_state() -> None:
    state, _ = _accessor()
    state.key = "k"
    assert state.reducing("r", max).get() is None
    for value in (3, 9, 4):
        state.reducing("r", max).add(value)
    assert state.reducing("r", max).get() == 9
    state.key = "j"
    state.reducing("sum", lambda a, b: a + b).add(2)
    state.reducing("sum", lambda a, b: a + b).add(5)
    assert state.reducing("sum", lambda a, b: a + b).get() == 7
    with pytest.raises(StateError, match="needs a function"):
        state.reducing("r", "max")  # type: ignore[arg-type]


def test_state_names_must_be_non_empty_strings() -> None:
    state, _ = _accessor()
    with pytest.raises(StateError, match="non-empty"):
        state.value("")
    with pytest.raises(StateError, match="non-empty"):
        state.list(3)  # type: ignore[arg-type]


def test_ttl_expires_on_read_and_is_not_extended_by_reading() -> None:
    clock = ManualClock(1000)
    state, backend = _accessor(clock)
    state.key = "k"
    state.value("v", ttl=500).set("x")
    assert backend.table("v", "", 500)["k"] == ("x", 1500)
    clock.advance(499)
    assert state.value("v", ttl=500).get() == "x"  # reading does not extend it
    clock.advance(1)
    assert state.value("v", default="gone", ttl=500).get() == "gone"
    assert "k" not in backend.table("v", "", 500)  # dropped when read


def test_ttl_restarts_on_write() -> None:
    clock = ManualClock(0)
    state, _ = _accessor(clock)
    state.key = "k"
    state.list("l", ttl=100).add(1)
    clock.advance(80)
    state.list("l", ttl=100).add(2)  # writing sets a new deadline
    clock.advance(80)
    assert state.list("l", ttl=100).get() == [1, 2]
    clock.advance(20)
    assert state.list("l", ttl=100).get() == []
    state.map("m", ttl=10).put("a", 1)
    state.reducing("r", max, ttl=10).add(4)
    clock.advance(10)
    assert state.map("m", ttl=10).get("a") is None
    assert state.reducing("r", max, ttl=10).get() is None


def test_state_namespaces_are_separate() -> None:
    backend = MemoryBackend(KeyCodec(128), ManualClock(0))
    w1 = StateAccessor(backend, lambda ttl: ttl, namespace="w1")
    w2 = StateAccessor(backend, lambda ttl: ttl, namespace="w2")
    w1.key = w2.key = "k"
    w1.value("v").set(1)
    assert w2.value("v").get() is None
    assert backend.table("v", "w1") == {"k": 1}
