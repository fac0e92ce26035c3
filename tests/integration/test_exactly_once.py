"""Exactly-once across savepoints and rescaling: the sequence check (tests/jobs/seqcheck.py).

The job runs with checkpoints every 200 ms, is stopped with a savepoint and resumed
three times at parallelism 2 -> 3 -> 1 -> 2. The committed output must hold every
(key, seq) exactly once, and the checker must never have seen a gap or a repeat.
"""

from __future__ import annotations

import collections
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, read_parts, status_summary, wait_for_state

JOB = Path(__file__).resolve().parents[1] / "jobs" / "seqcheck.py"


def check_output(records: list[dict[str, Any]], keys: int, n: int) -> None:
    alerts = [r for r in records if "alert" in r]
    assert alerts == []
    counts = collections.Counter((r["key"], r["seq"]) for r in records)
    duplicates = {k: c for k, c in counts.items() if c > 1}
    assert duplicates == {}
    missing = [(k, s) for k in range(keys) for s in range(1, n + 1) if (k, s) not in counts]
    assert missing == []
    assert len(records) == keys * n


async def wait_for_checkpoints(client: Any, job_id: str, count: int) -> dict[str, Any]:
    def done(status: dict[str, Any]) -> bool:
        if (status["checkpoints"] or {}).get("completed", 0) >= count:
            return True
        assert status["state"] in ("SCHEDULING", "RUNNING"), status["error"]
        return False

    status = await poll_until(
        lambda: client.status(job_id),
        until=done,
        timeout_s=60,
        what=f"{count} completed checkpoints of job {job_id}",
        show=status_summary,
    )
    return dict(status)


async def run_with_rescales(
    address: str, workdir: Path, parallelisms: list[int]
) -> list[dict[str, Any]]:
    """Run the job at each parallelism in turn, a savepoint between each; returns statuses."""
    statuses = []
    restore: str | None = None
    async with open_client(address) as client:
        for step, parallelism in enumerate(parallelisms):
            submission = prepare_submission(
                JOB, parallelism=parallelism, base_dir=workdir, restore_from=restore
            )
            job_id = await client.submit(submission)
            if step < len(parallelisms) - 1:
                await wait_for_checkpoints(client, job_id, 2)
                restore = await client.savepoint(
                    job_id, directory=str(workdir / "savepoints"), cancel=True
                )
                statuses.append(await wait_for_state(client, job_id, ("CANCELED",)))
            else:
                statuses.append(await wait_for_state(client, job_id, ("FINISHED",)))
            # Checkpoints given up because the job ended are not failures.
            history = await client.checkpoints(job_id)
            assert [c for c in history if c["state"] == "FAILED"] == []
            assert statuses[-1]["checkpoints"]["last_failure"] is None
    return statuses


@pytest.mark.parametrize("sink", ["jsonlines", "sqlite"])
def test_savepoints_and_rescaling_lose_and_duplicate_nothing(
    local_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: str
) -> None:
    keys, n = 12, 3000
    env = {
        "SEQ_KEYS": str(keys),
        "SEQ_N": str(n),
        "SEQ_RATE": "9000",
        "SEQ_OUT": str(tmp_path / "out"),
        "SEQ_SINK": sink,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cluster = local_cluster(nodes=2, slots=3)
    statuses = anyio.run(lambda: run_with_rescales(cluster.address, tmp_path, [2, 3, 1, 2]))

    assert [len(s["tasks"][0]["subtasks"]) for s in statuses] == [2, 3, 1, 2]
    assert [s["state"] for s in statuses] == ["CANCELED", "CANCELED", "CANCELED", "FINISHED"]
    assert all(s["restored_from"] for s in statuses[1:])
    if sink == "sqlite":
        with sqlite3.connect(tmp_path / "out" / "out.db") as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM records").fetchall()
            staging = db.execute("SELECT count(*) FROM _mesh_staging").fetchone()[0]
        records = [{k: row[k] for k in row.keys() if row[k] is not None} for row in rows]  # noqa: SIM118
        assert staging == 0  # nothing uncommitted is left behind
    else:
        records = read_parts(tmp_path / "out")
        leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
        assert leftovers == []
    check_output(records, keys, n)


def test_at_least_once_loses_nothing(
    local_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, n = 12, 3000
    env = {
        "SEQ_KEYS": str(keys),
        "SEQ_N": str(n),
        "SEQ_RATE": "9000",
        "SEQ_OUT": str(tmp_path / "out"),
        "SEQ_MODE": "at_least_once",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cluster = local_cluster(nodes=2, slots=3)
    anyio.run(lambda: run_with_rescales(cluster.address, tmp_path, [2, 3, 2]))
    records = read_parts(tmp_path / "out")
    assert [r for r in records if "alert" in r] == []  # no gap seen by the checker
    seen = {(r["key"], r["seq"]) for r in records}
    assert seen == {(k, s) for k in range(keys) for s in range(1, n + 1)}  # nothing lost


@pytest.mark.asyncio
async def test_a_tampered_savepoint_is_refused_naming_the_file(
    inprocess_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQ_RATE", "5000")
    monkeypatch.setenv("SEQ_N", "100000")
    monkeypatch.setenv("SEQ_OUT", str(tmp_path / "out"))
    cluster = inprocess_cluster(nodes=2, slots=2)

    async def scenario() -> str:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(JOB, base_dir=tmp_path))
            await wait_for_checkpoints(client, job_id, 1)
            return str(await client.savepoint(job_id, directory=str(tmp_path / "sp"), cancel=True))

    def tamper(savepoint: Path) -> Path:
        victim = sorted(savepoint.glob("checker-*.db"))[0]
        with sqlite3.connect(victim) as db:  # move one key back to seq 1
            key = db.execute("SELECT key FROM keyed_state LIMIT 1").fetchone()[0]
            db.execute("UPDATE keyed_state SET value = '{\"seq\":1}' WHERE key = ?", (key,))
        return victim

    async with cluster:
        savepoint = Path(await scenario())
        victim = tamper(savepoint)

    async def resume() -> str:
        async with open_client(cluster.address) as client:
            try:
                await client.submit(
                    prepare_submission(JOB, base_dir=tmp_path, restore_from=savepoint)
                )
            except Exception as exc:
                return str(exc)
        return "accepted"

        message = await resume()
        assert f"cannot restore: checkpoint {savepoint}: file {victim.name}" in message
        assert "wrong checksum" in message or "bytes, the metadata says" in message

        # A file that is gone is named too.
        victim.unlink()
        message = await resume()
        assert f"file {victim.name} (operator 'checker', subtask" in message
        assert "is missing" in message


@pytest.mark.asyncio
async def test_restoring_a_job_that_still_runs_is_refused(
    inprocess_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEQ_RATE", "5000")
    monkeypatch.setenv("SEQ_N", "100000")
    monkeypatch.setenv("SEQ_OUT", str(tmp_path / "out"))
    cluster = inprocess_cluster(nodes=1, slots=2)

    async def scenario() -> tuple[str, str]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(JOB, base_dir=tmp_path))
            await wait_for_checkpoints(client, job_id, 1)
            savepoint = await client.savepoint(job_id, directory=str(tmp_path / "sp"))
            try:
                await client.submit(
                    prepare_submission(JOB, base_dir=tmp_path, restore_from=savepoint)
                )
                message = "accepted"
            except Exception as exc:
                message = str(exc)
            await client.cancel(job_id)
            await wait_for_state(client, job_id, ("CANCELED",))
            return job_id, message

    async with cluster:
        job_id, message = await scenario()
    assert f"was taken from job {job_id} (seqcheck), which is still RUNNING" in message
    assert f"mesh cancel {job_id}" in message


@pytest.mark.asyncio
async def test_a_finished_job_restored_from_its_final_checkpoint_adds_nothing(
    inprocess_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last checkpoint of a bounded job holds its final transactions: restoring it
    (what failover does after a failure in the middle of the final commit) commits them
    idempotently and produces no record twice."""
    keys, n = 6, 400
    for key, value in {
        "SEQ_KEYS": str(keys),
        "SEQ_N": str(n),
        "SEQ_OUT": str(tmp_path / "out"),
        "SEQ_INTERVAL": "50ms",
    }.items():
        monkeypatch.setenv(key, value)
    cluster = inprocess_cluster(nodes=2, slots=1)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(JOB, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("FINISHED",))
            history = await client.checkpoints(job_id)
            latest = [c for c in history if c["state"] == "COMPLETED"][-1]
            again = await client.submit(
                prepare_submission(JOB, base_dir=tmp_path, restore_from=latest["path"])
            )
            return await wait_for_state(client, again, ("FINISHED",)), history

    async with cluster:
        status, history = await scenario()
    assert history[-1]["state"] == "COMPLETED"  # the final checkpoint comes last
    assert status["restored_from"]
    check_output(read_parts(tmp_path / "out"), keys, n)
