"""Final aggregates (``emit="final"``) on real daemons: each key's total is committed
exactly once, also when a node is killed -9 mid-stream (restored from a checkpoint, the
input replayed) and across a savepoint with a change of parallelism."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import read_parts, wait_for_state, write_job
from tests.integration.test_exactly_once import wait_for_checkpoints

N = 6000
KEYS = 37

JOB = f"""
    from mesh import Aggregate, Job, sinks, sources

    class CountSum(Aggregate):
        def create(self):
            return {{"count": 0, "sum": 0}}

        def add(self, acc, record):
            acc["count"] += 1
            acc["sum"] += record["v"]
            return acc

    job = Job("totals", parallelism=2, checkpoint_interval="200ms")
    events = job.source(
        sources.Generator(lambda i: {{"user": i % {KEYS}, "v": i}}, count={N}, rate=1500)
    ).uid("events")
    keyed = events.key_by(lambda e: e["user"])
    keyed.aggregate(CountSum(), emit="final").uid("totals").sink(
        sinks.JsonLines("out/totals")
    ).uid("totals-out")
    keyed.count(emit="final").uid("counts").sink(sinks.JsonLines("out/counts")).uid("counts-out")
"""


def expected_totals() -> dict[int, dict[str, int]]:
    totals: dict[int, dict[str, int]] = {}
    for i in range(N):
        t = totals.setdefault(i % KEYS, {"count": 0, "sum": 0})
        t["count"] += 1
        t["sum"] += i
    return totals


def check(tmp_path: Path) -> None:
    totals = read_parts(tmp_path / "out" / "totals")
    counts = read_parts(tmp_path / "out" / "counts")
    assert sorted(r["key"] for r in totals) == list(range(KEYS))  # each key once
    assert {r["key"]: r["value"] for r in totals} == expected_totals()
    assert sorted((r["key"], r["count"]) for r in counts) == [
        (k, t["count"]) for k, t in sorted(expected_totals().items())
    ]


@pytest.mark.slow
def test_final_totals_are_exact_after_a_node_is_killed(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, JOB, "totals.py")
    cluster = local_cluster(nodes=3, slots=2)

    async def scenario() -> dict[str, Any]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            status = await wait_for_checkpoints(client, job_id, 2)
            used = {s["node"] for t in status["tasks"] for s in t["subtasks"]}
            victim = next(n for n in cluster.nodes if n.name in used)
            cluster.kill(victim, signal.SIGKILL)
            cluster.add_node()
            return await wait_for_state(client, job_id, ("FINISHED", "FAILED"), timeout_s=90)

    final = anyio.run(scenario)
    assert final["state"] == "FINISHED", final["error"]
    assert final["restarts"] >= 1 and "chk-" in (final["restored_from"] or "")
    check(tmp_path)


@pytest.mark.slow
def test_final_totals_survive_a_savepoint_and_a_rescale(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, JOB, "totals.py")
    cluster = local_cluster(nodes=2, slots=3)

    async def scenario() -> dict[str, Any]:
        async with open_client(cluster.address) as client:
            first = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_checkpoints(client, first, 2)
            savepoint = await client.savepoint(
                first, directory=str(tmp_path / "savepoints"), cancel=True
            )
            await wait_for_state(client, first, ("CANCELED",))
            resumed = prepare_submission(
                job_file, parallelism=3, base_dir=tmp_path, restore_from=savepoint
            )
            second = await client.submit(resumed)
            return await wait_for_state(client, second, ("FINISHED", "FAILED"), timeout_s=90)

    final = anyio.run(scenario)
    assert final["state"] == "FINISHED", final["error"]
    check(tmp_path)


RESTORED_AFTER_FINISH = """
    from mesh import Job, sinks, sources

    job = Job("finals", parallelism=1, checkpoint_interval="200ms")
    records = [{"user": f"u{i % 5}", "v": i} for i in range(50)]
    finals = job.source(sources.Collection(records)).key_by(lambda r: r["user"]).count(
        emit="final"
    )
    # A slow second input keeps the job running long after the counts were emitted.
    slow = job.source(sources.Generator(lambda i: {"tick": i}, count=60, rate=20))
    finals.union(slow).sink(sinks.JsonLines("out/mixed"))
"""


@pytest.mark.slow
def test_final_values_are_not_emitted_again_after_a_restore(local_cluster, tmp_path: Path) -> None:
    """A checkpoint taken after the final values went out holds none of them: restored
    (a node killed -9), the job emits them no second time."""
    job_file = write_job(tmp_path, RESTORED_AFTER_FINISH, "finals.py")
    cluster = local_cluster(nodes=2, slots=2)

    async def scenario() -> dict[str, Any]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            status = await wait_for_checkpoints(client, job_id, 3)
            victim = next(
                n
                for n in cluster.nodes
                if n.name in {s["node"] for t in status["tasks"] for s in t["subtasks"]}
            )
            cluster.kill(victim, signal.SIGKILL)
            cluster.add_node()
            return await wait_for_state(client, job_id, ("FINISHED", "FAILED"), timeout_s=90)

    final = anyio.run(scenario)
    assert final["state"] == "FINISHED", final["error"]
    assert final["restarts"] >= 1
    records = read_parts(tmp_path / "out" / "mixed")
    counts = sorted((r["key"], r["count"]) for r in records if "key" in r)
    assert counts == [(f"u{k}", 10) for k in range(5)]  # once each
    assert sorted(r["tick"] for r in records if "tick" in r) == list(range(60))
