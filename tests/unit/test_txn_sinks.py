"""Exactly-once sinks driven by checkpoints (mesh/node/connectors/txn_sinks.py): the
two-phase bookkeeping, with the built-in JsonLines and SQLite writers and committers."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from mesh import Job, sinks, sources
from mesh.errors import EncodingError, RecordError, StateError
from mesh.graph.keygroups import KeyGroupRange
from mesh.node.connectors.factory import build_sink
from mesh.node.connectors.sqlite_sink import SqliteWriter
from mesh.node.connectors.txn_sinks import TwoPhaseSink
from mesh.node.operators.base import RestoredState
from mesh.node.operators.context import TaskContext
from mesh.time.clock import ManualClock

TIMEOUT = 10
KINDS = ["jsonlines", "sqlite"]
UID = "out"
DB = "db/out.db"


class Sinks:
    """Builds sinks (opened) in one base directory and reads what they made visible."""

    def __init__(self, kind: str, base: Path) -> None:
        self.kind = kind
        self.base = base
        self.made: list[TwoPhaseSink] = []

    async def new(
        self,
        *,
        job_id: str = "job-a",
        subtask: int = 0,
        attempt: int = 0,
        key: str | None = None,
        uid: str = UID,
    ) -> TwoPhaseSink:
        description: sinks.Sink = (
            sinks.JsonLines("out") if self.kind == "jsonlines" else sinks.SQLite(DB, "events", key)
        )
        job = Job("sinks")
        job.source(sources.Collection([1])).sink(description).uid(uid)
        spec = job.build().graph.operator(1)
        ctx = TaskContext(
            job_id=job_id,
            attempt=attempt,
            node_id="node-1",
            task_name="sink",
            subtask_index=subtask,
            parallelism=2,
            max_parallelism=128,
            base_dir=self.base,
            clock=ManualClock(1000),
        )
        sink = build_sink(spec, description, ctx)
        assert isinstance(sink, TwoPhaseSink)
        await sink.writer.open()
        await sink.committer.open()
        self.made.append(sink)
        return sink

    def visible(self) -> list[Any]:
        """Committed records: part-*.jsonl lines in name order, or table rows in order."""
        if self.kind == "jsonlines":
            out = []
            for path in sorted((self.base / "out").glob("part-*.jsonl")):
                out.extend(orjson.loads(line)["v"] for line in path.read_bytes().splitlines())
            return out
        return [r["v"] for r in self.rows()]

    def rows(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.base / DB)
        try:
            conn.row_factory = sqlite3.Row
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
            if not exists:
                return []
            return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY rowid")]
        finally:
            conn.close()

    def hidden(self) -> list[str]:
        """What is written but not visible: hidden files, or staging transactions."""
        if self.kind == "jsonlines":
            return sorted(p.name for p in (self.base / "out").iterdir() if p.name.startswith("."))
        conn = sqlite3.connect(self.base / DB)
        try:
            return [
                r[0] for r in conn.execute("SELECT DISTINCT txn FROM _mesh_staging ORDER BY txn")
            ]
        finally:
            conn.close()

    def close(self) -> None:
        for sink in self.made:
            sink.close()


@pytest.fixture(params=KINDS)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sinks]:
    made = Sinks(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture
def make_kit(tmp_path: Path) -> Iterator[Callable[[str], Sinks]]:
    made: list[Sinks] = []

    def build(kind: str) -> Sinks:
        made.append(Sinks(kind, tmp_path / kind))
        return made[-1]

    yield build
    for kit in made:
        kit.close()


def write(sink: TwoPhaseSink, batch: list[Any]) -> list[Any]:
    """``process`` a batch, then insert what an SQLite sink staged (its ``settle``, inline)."""
    out = sink.process(batch)
    writer = sink.writer
    if isinstance(writer, SqliteWriter) and writer._unwritten:
        rows, writer._unwritten = writer._unwritten, []
        writer._insert(writer._writer, rows)
    return out


async def notify(sink: TwoPhaseSink, checkpoint_id: int) -> None:
    """Checkpoint ``checkpoint_id`` completed: the sink commits (its committing task's
    work, inline)."""
    sink.notify_checkpoint_complete(checkpoint_id)
    await sink.commit_due()


def _records(*values: Any) -> list[dict[str, Any]]:
    return [{"v": v} for v in values]


def _restored(
    job_id: str, mine: list[dict[str, Any]], everyone: list[dict[str, Any]]
) -> RestoredState:
    return RestoredState(
        checkpoint_id=max([e["checkpoint"] for e in everyone if e["checkpoint"] != "end"] or [0]),
        job_id=job_id,
        keyed_files=[],
        key_groups=KeyGroupRange(0, 0),
        operator_state={"pending": [dict(e) for e in mine]},
        all_operator_state={"pending": [dict(e) for e in everyone]},
    )


# -- the transaction lifecycle ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_records_become_visible_when_their_checkpoint_completes(kit: Sinks) -> None:
    sink = await kit.new()
    write(sink, _records(1, 2))
    assert kit.visible() == []
    assert len(kit.hidden()) == 1  # the current transaction

    state1 = sink.snapshot_state(1)  # pre-commit
    [entry1] = state1["pending"]
    assert entry1["checkpoint"] == 1 and entry1["job"] == "job-a"
    assert kit.visible() == []
    assert len(kit.hidden()) == 1  # the pre-committed transaction

    write(sink, _records(3))
    state2 = sink.snapshot_state(2)
    assert [e["checkpoint"] for e in state2["pending"]] == [1, 2]
    write(sink, _records(4))
    assert kit.visible() == []
    assert len(kit.hidden()) == 3

    await notify(sink, 1)
    assert kit.visible() == [1, 2]
    assert [e["checkpoint"] for e in sink.pending] == [2]
    await notify(sink, 2)
    assert kit.visible() == [1, 2, 3]
    assert sink.pending == []
    assert len(kit.hidden()) == 1  # record 4 is still in the current transaction

    await notify(sink, 2)  # again: nothing changes
    await notify(sink, 1)
    assert kit.visible() == [1, 2, 3]

    assert await sink.end_of_input() is True
    assert kit.visible() == [1, 2, 3]
    await sink.commit_final()
    assert kit.visible() == [1, 2, 3, 4]
    assert kit.hidden() == []
    assert sink.pending == []


@pytest.mark.asyncio
async def test_a_completed_checkpoint_commits_every_earlier_one(kit: Sinks) -> None:
    sink = await kit.new()
    for checkpoint, value in enumerate("abc", start=1):
        write(sink, _records(value))
        sink.snapshot_state(checkpoint)
    await notify(sink, 2)  # notification 1 was skipped
    assert kit.visible() == ["a", "b"]
    await notify(sink, 5)
    assert kit.visible() == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_checkpoint_without_records_adds_no_transaction(kit: Sinks) -> None:
    sink = await kit.new()
    assert sink.snapshot_state(1) == {"pending": []}
    await notify(sink, 1)
    assert kit.visible() == []
    assert await sink.end_of_input() is False
    await sink.commit_final()
    assert kit.visible() == []


@pytest.mark.asyncio
async def test_snapshot_state_returns_copies(kit: Sinks) -> None:
    sink = await kit.new()
    write(sink, _records(1))
    state = sink.snapshot_state(1)
    state["pending"][0]["checkpoint"] = 99
    await notify(sink, 1)
    assert kit.visible() == [1]


@pytest.mark.asyncio
async def test_end_of_input_waits_for_commit_final(kit: Sinks) -> None:
    sink = await kit.new()
    write(sink, _records(1))
    sink.snapshot_state(1)
    write(sink, _records(2))
    assert await sink.end_of_input() is True
    assert [e["checkpoint"] for e in sink.pending] == [1, "end"]
    await notify(sink, 10**6)  # a checkpoint never commits the final part
    assert kit.visible() == [1]
    await sink.commit_final()
    assert kit.visible() == [1, 2]
    await sink.commit_final()
    assert kit.visible() == [1, 2]


@pytest.mark.asyncio
async def test_the_writer_finishes_after_the_final_commit(kit: Sinks) -> None:
    sink = await kit.new()
    write(sink, _records(1))
    await sink.end_of_input()
    seen = []
    sink.writer.finish = lambda: seen.append(kit.visible())  # type: ignore[method-assign]
    await sink.commit_final()
    assert seen == [[1]]  # once, after the final part was committed


@pytest.mark.asyncio
async def test_commit_all_makes_everything_visible(kit: Sinks) -> None:
    sink = await kit.new()
    write(sink, _records(1))
    sink.snapshot_state(1)
    write(sink, _records(2))
    await sink.commit_all()
    assert kit.visible() == [1, 2]
    assert kit.hidden() == []


@pytest.mark.asyncio
async def test_abort_drops_the_current_transaction(kit: Sinks) -> None:
    sink = await kit.new()
    write(sink, _records(1))
    sink.snapshot_state(1)
    write(sink, _records("dropped"))
    sink.abort()
    assert len(kit.hidden()) == 1  # only the pre-committed transaction is left
    write(sink, _records(2))
    sink.snapshot_state(2)
    await notify(sink, 2)
    assert kit.visible() == [1, 2]
    assert kit.hidden() == []


@pytest.mark.asyncio
async def test_jsonlines_file_names(make_kit: Callable[[str], Sinks]) -> None:
    kit = make_kit("jsonlines")
    sink = await kit.new(job_id="j7", subtask=1, attempt=2)
    write(sink, _records(1))
    assert kit.hidden()[0].startswith(".part-j7-out-1-a2-")
    assert kit.hidden()[0].endswith(".inprogress")
    sink.snapshot_state(3)
    assert kit.hidden() == [".part-j7-out-1-000003-a2.pending"]
    await notify(sink, 3)
    write(sink, _records(2))
    await sink.end_of_input()
    await sink.commit_final()
    assert sorted(p.name for p in (kit.base / "out").iterdir()) == [
        "part-j7-out-1-000003.jsonl",
        "part-j7-out-1-end.jsonl",
    ]


@pytest.mark.asyncio
async def test_jsonlines_refuses_records_that_are_not_json(
    make_kit: Callable[[str], Sinks],
) -> None:
    sink = await make_kit("jsonlines").new()
    with pytest.raises(EncodingError, match=r"'out'.*set"):
        write(sink, [{"ok": 1}, {1, 2}])


@pytest.mark.asyncio
async def test_commit_of_a_lost_transaction_fails_before_committing_later_ones(
    make_kit: Callable[[str], Sinks],
) -> None:
    kit = make_kit("jsonlines")
    sink = await kit.new()
    write(sink, _records(1))
    [first] = sink.snapshot_state(1)["pending"]
    write(sink, _records(2))
    sink.snapshot_state(2)
    os.unlink(first["pending"])
    with pytest.raises(StateError, match="records are lost"):
        await notify(sink, 2)
    # Strictly in order: transaction 2 waits for 1 (a committer may rely on that).
    assert kit.visible() == []
    assert [e["checkpoint"] for e in sink.pending] == [1, 2]


# -- restore -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_restore_commits_pending_transactions_exactly_once(kit: Sinks) -> None:
    old0 = await kit.new(job_id="job-a", subtask=0)
    old1 = await kit.new(job_id="job-a", subtask=1)
    unrelated = await kit.new(job_id="job-z", subtask=0)
    write(old0, _records("a1", "a2"))
    write(old1, _records("b1"))
    write(unrelated, _records("z1"))
    state0 = old0.snapshot_state(1)["pending"]
    state1 = old1.snapshot_state(1)["pending"]
    unrelated.snapshot_state(1)
    # Written after the snapshot, then the old job crashes (no notification, no close).
    write(old0, _records("lost-a"))
    write(old1, _records("lost-b"))
    write(unrelated, _records("z2"))
    before = kit.hidden()
    unrelated_hidden = [n for n in before if "job-z" in n]
    assert len(unrelated_hidden) == 2
    assert kit.visible() == []

    everyone = state0 + state1
    new = await kit.new(job_id="job-b", subtask=0)  # restored with parallelism 1
    with anyio.fail_after(TIMEOUT):
        await new.initialize(_restored("job-a", everyone, everyone))
    assert sorted(kit.visible()) == ["a1", "a2", "b1"]
    assert kit.hidden() == unrelated_hidden  # the old job's leftovers are gone

    # Restoring the same checkpoint again (another failover) duplicates nothing.
    again = await kit.new(job_id="job-c", subtask=0)
    with anyio.fail_after(TIMEOUT):
        await again.initialize(_restored("job-a", everyone, everyone))
    assert sorted(kit.visible()) == ["a1", "a2", "b1"]

    # The unrelated job goes on as if nothing happened.
    await notify(unrelated, 1)
    await unrelated.end_of_input()
    await unrelated.commit_final()
    assert sorted(kit.visible()) == ["a1", "a2", "b1", "z1", "z2"]

    # The restored job writes on.
    write(new, _records("new"))
    new.snapshot_state(2)
    await notify(new, 2)
    assert sorted(kit.visible()) == ["a1", "a2", "b1", "new", "z1", "z2"]


@pytest.mark.asyncio
async def test_restore_after_the_commit_already_happened(kit: Sinks) -> None:
    old = await kit.new(job_id="job-a")
    write(old, _records(1, 2))
    state = old.snapshot_state(1)["pending"]
    await notify(old, 1)  # committed, then the job failed
    assert kit.visible() == [1, 2]
    new = await kit.new(job_id="job-b")
    with anyio.fail_after(TIMEOUT):
        await new.initialize(_restored("job-a", state, state))
    assert kit.visible() == [1, 2]


@pytest.mark.asyncio
async def test_only_subtask_0_cleans_up(kit: Sinks) -> None:
    old = await kit.new(job_id="job-a")
    write(old, _records(1))
    state = old.snapshot_state(1)["pending"]
    write(old, _records("leftover"))
    new1 = await kit.new(job_id="job-b", subtask=1)
    with anyio.fail_after(TIMEOUT):
        await new1.initialize(_restored("job-a", state, state))
    assert kit.visible() == [1]
    assert len(kit.hidden()) == 1  # subtask 1 committed, but did not clean up
    new0 = await kit.new(job_id="job-b", subtask=0)
    with anyio.fail_after(TIMEOUT):
        await new0.initialize(_restored("job-a", [], state))
    assert kit.hidden() == []
    assert kit.visible() == [1]


@pytest.mark.asyncio
async def test_a_first_attempt_without_restore_touches_nothing(kit: Sinks) -> None:
    other = await kit.new(job_id="job-a", subtask=1)
    write(other, _records(1))
    new = await kit.new(job_id="job-a", subtask=0)
    with anyio.fail_after(TIMEOUT):
        await new.initialize(None)
    assert len(kit.hidden()) == 1


@pytest.mark.asyncio
async def test_a_failover_cleans_only_its_own_subtasks_leftovers(kit: Sinks) -> None:
    # Attempt 0 wrote (subtask 0 and 1) and died before any checkpoint. Attempt 1's
    # subtask 1 already writes again when its subtask 0 starts: subtask 0 removes its
    # own old transaction and nothing of its sibling's.
    write(await kit.new(job_id="job-a", subtask=0), _records(1))
    write(await kit.new(job_id="job-a", subtask=1), _records(2))
    sibling = await kit.new(job_id="job-a", subtask=1, attempt=1)
    with anyio.fail_after(TIMEOUT):
        await sibling.initialize(None)  # removes its own attempt-0 leftover
    write(sibling, _records(3))
    new = await kit.new(job_id="job-a", subtask=0, attempt=1)
    with anyio.fail_after(TIMEOUT):
        await new.initialize(None)
    hidden = kit.hidden()
    assert len(hidden) == 1 and "-1-a1-" in hidden[0]  # the sibling's new transaction


@pytest.mark.parametrize(
    "kind",
    [
        "jsonlines",
        "sqlite",
    ],
)
@pytest.mark.asyncio
async def test_restore_with_no_pending_transactions_deletes_leftovers(
    make_kit: Callable[[str], Sinks], kind: str
) -> None:
    kit = make_kit(kind)
    old = await kit.new(job_id="job-a")
    assert old.snapshot_state(1) == {"pending": []}
    write(old, _records("leftover"))  # written after the snapshot; then the job crashes
    assert len(kit.hidden()) == 1
    new = await kit.new(job_id="job-b")
    with anyio.fail_after(TIMEOUT):
        await new.initialize(_restored("job-a", [], []))
    assert kit.hidden() == []
    assert kit.visible() == []


@pytest.mark.parametrize(
    "kind",
    [
        "jsonlines",
        "sqlite",
    ],
)
@pytest.mark.asyncio
async def test_restore_deletes_transactions_precommitted_after_the_checkpoint(
    make_kit: Callable[[str], Sinks], kind: str
) -> None:
    kit = make_kit(kind)
    old = await kit.new(job_id="job-a")
    write(old, _records(1))
    state = old.snapshot_state(1)["pending"]
    write(old, _records(2))
    old.snapshot_state(2)  # checkpoint 2 never completed: the job failed
    write(old, _records(3))
    assert len(kit.hidden()) == 3
    new = await kit.new(job_id="job-b")
    with anyio.fail_after(TIMEOUT):
        await new.initialize(_restored("job-a", state, state))
    assert kit.visible() == [1]
    assert kit.hidden() == []


@pytest.mark.parametrize(
    "kind",
    [
        "jsonlines",
        "sqlite",
    ],
)
@pytest.mark.asyncio
async def test_cleanup_leaves_other_sinks_of_the_old_job_alone(
    make_kit: Callable[[str], Sinks], kind: str
) -> None:
    kit = make_kit(kind)
    old_out = await kit.new(job_id="job-a", uid="out")
    old_out2 = await kit.new(job_id="job-a", uid="out-2")
    write(old_out, _records("from out"))
    write(old_out2, _records("from out-2"))
    state_out = old_out.snapshot_state(1)["pending"]
    state_out2 = old_out2.snapshot_state(1)["pending"]
    new_out = await kit.new(job_id="job-b", uid="out")
    new_out2 = await kit.new(job_id="job-b", uid="out-2")
    with anyio.fail_after(TIMEOUT):
        await new_out.initialize(_restored("job-a", state_out, state_out))
        await new_out2.initialize(_restored("job-a", state_out2, state_out2))
    assert sorted(kit.visible()) == ["from out", "from out-2"]


# -- SQLite specifics --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sqlite_upserts_with_a_key(make_kit: Callable[[str], Sinks]) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new(key="id")
    write(sink, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}])
    sink.snapshot_state(1)
    await notify(sink, 1)
    assert kit.rows() == [{"id": 1, "v": "c"}, {"id": 2, "v": "b"}]
    write(sink, [{"id": 2, "v": "d", "extra": 5}])
    sink.snapshot_state(2)
    await notify(sink, 2)
    assert kit.rows() == [
        {"id": 1, "v": "c", "extra": None},
        {"id": 2, "v": "d", "extra": 5},
    ]


@pytest.mark.asyncio
async def test_sqlite_without_a_key_appends(make_kit: Callable[[str], Sinks]) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    write(sink, [{"id": 1, "v": "a"}, {"id": 1, "v": "a"}])
    await sink.commit_all()
    assert kit.rows() == [{"id": 1, "v": "a"}, {"id": 1, "v": "a"}]


@pytest.mark.asyncio
async def test_sqlite_new_fields_add_columns(make_kit: Callable[[str], Sinks]) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    write(sink, [{"v": 1}])
    sink.snapshot_state(1)
    await notify(sink, 1)
    write(sink, [{"v": 2, "name": "x", "tags": ["a", "b"]}, {"v": 3, "meta": {"k": 1}}])
    sink.snapshot_state(2)
    await notify(sink, 2)
    assert kit.rows() == [
        {"v": 1, "name": None, "tags": None, "meta": None},
        {"v": 2, "name": "x", "tags": '["a","b"]', "meta": None},
        {"v": 3, "name": None, "tags": None, "meta": '{"k":1}'},
    ]


@pytest.mark.parametrize("record", [1, "text", ["v", 1], None])
@pytest.mark.asyncio
async def test_sqlite_refuses_records_that_are_not_dicts(
    make_kit: Callable[[str], Sinks], record: Any
) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    with pytest.raises(RecordError, match=r"sink 'out' \(SQLite events\) needs dict records"):
        write(sink, [{"v": 1}, record])
    assert kit.hidden() == []  # nothing of the batch was staged


@pytest.mark.asyncio
async def test_sqlite_record_without_the_key_field_is_refused_when_written(
    make_kit: Callable[[str], Sinks],
) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new(key="id")
    # Refused at once, naming the sink and the record, before it can block a commit.
    with pytest.raises(RecordError, match=r"sink 'out' .* upserts by 'id', but a record has no"):
        write(sink, [{"v": 1}])
    sink.snapshot_state(1)
    await notify(sink, 1)
    assert kit.rows() == []


@pytest.mark.asyncio
async def test_sqlite_upsert_of_records_with_only_the_key(make_kit: Callable[[str], Sinks]) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new(key="id")
    write(sink, [{"id": 1}, {"id": 2}, {"id": 1}])
    sink.snapshot_state(1)
    await notify(sink, 1)
    assert kit.rows() == [{"id": 1}, {"id": 2}]


@pytest.mark.asyncio
async def test_sqlite_commit_is_recorded_once(make_kit: Callable[[str], Sinks]) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    write(sink, _records(1))
    [entry] = sink.snapshot_state(1)["pending"]
    assert entry["txn"] == "job-a-out-0-000001"
    await notify(sink, 1)
    other = await kit.new(job_id="job-b")
    await other.committer.commit(dict(entry))  # a retried commit of the same transaction
    assert kit.visible() == [1]
    conn = sqlite3.connect(kit.base / DB)
    try:
        commits = conn.execute("SELECT txn, committed_ms FROM _mesh_commits").fetchall()
    finally:
        conn.close()
    assert commits == [("job-a-out-0-000001", 1000)]


# -- failures while pre-committing and committing ---------------------------------------------


@pytest.mark.asyncio
async def test_a_failed_jsonlines_precommit_keeps_the_transaction(
    make_kit: Callable[[str], Sinks], monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = make_kit("jsonlines")
    sink = await kit.new()
    write(sink, _records(1, 2, 3))
    real_fsync = os.fsync
    calls = {"n": 0}

    def full_disk(fd: int) -> None:
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        sink.snapshot_state(1)  # the checkpoint is declined
    assert calls["n"] == 1
    monkeypatch.setattr(os, "fsync", real_fsync)
    write(sink, _records(4))
    sink.snapshot_state(2)
    await notify(sink, 2)
    assert kit.visible() == [1, 2, 3, 4]  # nothing lost
    assert kit.hidden() == []


@pytest.mark.asyncio
async def test_a_failed_sqlite_precommit_keeps_the_transaction(
    make_kit: Callable[[str], Sinks],
) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    write(sink, _records(1, 2, 3))
    with sqlite3.connect(kit.base / DB) as other:
        other.execute(
            "CREATE TRIGGER full BEFORE UPDATE ON _mesh_staging "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    with pytest.raises(StateError, match=r"cannot pre-commit into .*out\.db.*disk is full"):
        sink.snapshot_state(1)
    with sqlite3.connect(kit.base / DB) as other:
        other.execute("DROP TRIGGER full")
    write(sink, _records(4))
    [entry] = sink.snapshot_state(2)["pending"]
    assert entry["rows"] == 4 and entry["path"] == str(kit.base / DB)
    await notify(sink, 2)
    assert kit.visible() == [1, 2, 3, 4]
    assert kit.hidden() == []


@pytest.mark.asyncio
async def test_sqlite_sink_inserts_in_settle_and_at_precommit(
    make_kit: Callable[[str], Sinks],
) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    assert sink.needs_settle
    sink.process(_records(1, 2))
    assert kit.hidden() == []  # staged in memory until settle
    with anyio.fail_after(TIMEOUT):
        await sink.settle()
    assert len(kit.hidden()) == 1
    sink.process(_records(3))  # the input ends before settle: pre-commit inserts it
    assert await sink.end_of_input() is True
    await sink.commit_final()
    assert kit.visible() == [1, 2, 3]


@pytest.mark.asyncio
async def test_sqlite_commit_refuses_a_transaction_whose_rows_are_gone(
    make_kit: Callable[[str], Sinks],
) -> None:
    kit = make_kit("sqlite")
    sink = await kit.new()
    write(sink, _records(1, 2))
    [entry] = sink.snapshot_state(1)["pending"]
    with sqlite3.connect(kit.base / DB) as other:
        other.execute("DELETE FROM _mesh_staging")
    with pytest.raises(StateError, match=rf"{entry['txn']} staged 2 rows in .*out\.db.*lost"):
        await notify(sink, 1)
    assert kit.visible() == []


@pytest.mark.asyncio
async def test_sqlite_restore_commits_into_the_database_that_staged_it(
    make_kit: Callable[[str], Sinks], tmp_path: Path
) -> None:
    kit = make_kit("sqlite")
    old = await kit.new()
    write(old, _records(1, 2))
    [entry] = old.snapshot_state(1)["pending"]
    elsewhere = Sinks("sqlite", tmp_path / "moved")  # the restored job's path differs
    try:
        new = await elsewhere.new(job_id="job-b")
        await new.committer.commit(entry)
        assert kit.visible() == [1, 2]
        assert elsewhere.visible() == []
    finally:
        elsewhere.close()
