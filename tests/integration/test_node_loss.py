"""A node that dies is noticed by its missing heartbeats, and its jobs fail with a
message naming it (failover that recovers the job comes with checkpoints)."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job

JOB = """
    from mesh import Job, sinks, sources

    job = Job("forever", parallelism=2)
    ticks = job.source(sources.Generator(lambda i: i, rate=1000))
    ticks.rebalance().map(lambda x: x).sink(sinks.Collect())
"""


def test_killed_node_fails_its_jobs_and_leaves_the_registry(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, JOB)
    cluster = local_cluster(
        nodes=2,
        slots=2,
        env={"MESH_HEARTBEAT_INTERVAL": "200ms", "MESH_HEARTBEAT_TIMEOUT": "1s"},
    )

    async def scenario() -> tuple[dict, list]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            victim = next(n for n in cluster.nodes if n.name == "node-2")
            cluster.kill(victim, signal.SIGKILL)
            status = await wait_for_state(client, job_id, ("FAILED",), timeout_s=15)
            # A failed job's slots stay busy until the node reports them free: wait for it.
            nodes = await poll_until(
                client.nodes,
                until=lambda nodes: [n["free"] for n in nodes] == [2],
                timeout_s=15,
                what="node-1 alone, with its 2 slots free",
            )
            return status, nodes

    status, nodes = anyio.run(scenario)
    assert "node node-2" in status["error"] and "lost: no heartbeat for 1000 ms" in status["error"]
    assert [n["node_id"] for n in nodes] == ["node-1"]
    assert nodes[0]["free"] == 2  # the failed job's slots are free again


def test_a_node_declared_lost_registers_again_when_it_wakes(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, JOB)
    small = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("after", parallelism=2)
        job.source(sources.Collection(range(100))).rebalance().map(lambda x: x).sink(
            sinks.Collect()
        )
        """,
        "after.py",
    )
    cluster = local_cluster(
        nodes=2,
        slots=2,
        env={"MESH_HEARTBEAT_INTERVAL": "200ms", "MESH_HEARTBEAT_TIMEOUT": "1s"},
    )
    sleeper = next(n for n in cluster.nodes if n.name == "node-2")

    async def scenario() -> tuple[dict, list, list]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            cluster.kill(sleeper, signal.SIGSTOP)  # cut off, alive
            try:
                failed = await wait_for_state(client, job_id, ("FAILED",), timeout_s=15)
            finally:
                cluster.kill(sleeper, signal.SIGCONT)
            nodes = await poll_until(
                client.nodes,
                # Registered again, and its stopped subtasks no longer hold slots.
                until=lambda nodes: len(nodes) == 2 and all(n["free"] == 2 for n in nodes),
                timeout_s=15,
                what="node-2 registered again with its 2 slots free",
            )
            after = await client.submit(prepare_submission(small, base_dir=tmp_path))
            done = await wait_for_state(client, after, ("FINISHED",))
            return failed, nodes, [s["node"] for t in done["tasks"] for s in t["subtasks"]]

    failed, nodes, placement = anyio.run(scenario)
    assert "node node-2" in failed["error"]
    assert sorted(n["node_id"] for n in nodes) == ["node-1", "node-2"]
    assert "node-2" in placement  # the woken node runs new work
    assert sleeper.alive()
