"""Snapshot files are plain SQLite: anyone can open them and read the state."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.graph.keygroups import key_group_for, key_group_range
from tests.helpers import poll_until, wait_for_state, write_job

JOB = """
    from mesh import Job, sinks, sources

    job = Job("inspect", parallelism=2, max_parallelism=64, state_backend="{backend}")
    counted = job.source(sources.Generator(lambda i: {{"user": f"u{{i % 10}}"}}, count=1000))
    idle = job.source(sources.Generator(lambda i: {{"user": "idle"}}, rate=1)).filter(
        lambda r: False
    )
    counted.uid("counted").union(idle).key_by(lambda r: r["user"]).count().uid("counter").sink(
        sinks.Collect()
    )
"""


@pytest.mark.asyncio
async def test_a_savepoint_holds_the_state_by_key_group_key_namespace_and_name(
    inprocess_cluster, tmp_path: Path
) -> None:
    for backend in ("memory", "sqlite"):
        job_file = write_job(tmp_path, JOB.format(backend=backend), f"inspect_{backend}.py")
        cluster = inprocess_cluster(nodes=2, slots=2)

        async def scenario(job_file: Path = job_file, cluster=cluster, backend=backend) -> str:
            async with open_client(cluster.address) as client:
                job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
                await wait_for_state(client, job_id, ("RUNNING",))
                seen = 0
                offset = 0

                async def fetch() -> int:
                    nonlocal seen, offset
                    records, offset, _ = await client.fetch_collected(job_id, offset)
                    seen += len(records)
                    return seen

                await poll_until(
                    fetch, until=lambda n: n >= 1000, timeout_s=30, what="1000 collected records"
                )
                return str(
                    await client.savepoint(job_id, directory=str(tmp_path / backend), cancel=True)
                )

        async with cluster:
            savepoint = Path(await scenario())
        metadata = json.loads((savepoint / "_metadata.json").read_text())
        counter = metadata["operators"]["counter"]
        assert counter["parallelism"] == 2 and counter["max_parallelism"] == 64
        assert sorted(f["file"] for f in counter["files"]) == ["counter-0.db", "counter-1.db"]
        assert {f["sha256"] for f in counter["files"]} and all(
            f["size"] > 0 for f in counter["files"]
        )
        rows = []
        for index in (0, 1):
            db = sqlite3.connect(savepoint / f"counter-{index}.db")
            try:
                strict = db.execute(
                    "SELECT sql FROM sqlite_master WHERE name = 'keyed_state'"
                ).fetchone()[0]
                assert "STRICT" in strict
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                assert json.loads(meta["uid"]) == "counter"
                groups = key_group_range(index, 2, 64)
                assert json.loads(meta["key_groups"]) == [groups.start, groups.end]
                for key_group, key, namespace, name, value, expires in db.execute(
                    "SELECT key_group, key, namespace, name, value, expires_at FROM keyed_state"
                ):
                    assert key_group in groups  # a subtask holds only its own key groups
                    rows.append((key_group, json.loads(key), namespace, name, json.loads(value)))
                    assert expires is None
            finally:
                db.close()
        expected = sorted(
            (key_group_for(f"u{k}", 64), f"u{k}", "", "value", 100) for k in range(10)
        )
        assert sorted(rows) == expected, backend
        # The sources' positions are operator state: where each split stands.
        db = sqlite3.connect(savepoint / "counted-0.db")
        try:
            splits = [json.loads(v) for (v,) in db.execute("SELECT value FROM operator_state")]
        finally:
            db.close()
        assert splits == [{"start": 0, "stride": 2, "next": 1000}]
