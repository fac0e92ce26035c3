"""The in-process cluster (``mesh.testing.InProcessCluster``): the real daemons as tasks of
the test's event loop, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import anyio
import pytest

from mesh.client.client import open_client
from mesh.errors import MeshError
from mesh.testing import InProcessCluster
from mesh.time.clock import ManualClock
from tests.helpers import poll_until, run_job, write_job

JOB = """
    from mesh import Job, sinks, sources

    job = Job("squares", parallelism=2)
    job.source(sources.Collection(list(range(50)))).rebalance().map(lambda x: x * x).sink(
        sinks.Collect()
    )
"""


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port (a fresh socket can bind it)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.asyncio
async def test_it_starts_n_nodes_that_register_on_loopback(inprocess_cluster) -> None:
    async with inprocess_cluster(nodes=3, slots=2) as cluster:
        assert cluster.address.startswith("tcp://127.0.0.1:") and port_of(cluster.address) > 0
        async with open_client(cluster.address) as client:
            nodes = await client.nodes()
        assert [(n["node_id"], n["slots"], n["free"], n["used"]) for n in nodes] == [
            ("node-1", 2, 2, 0),
            ("node-2", 2, 2, 0),
            ("node-3", 2, 2, 0),
        ]
        ports = set()
        for node in cluster.nodes:
            for endpoint in (node.address.data_endpoint, node.address.control_endpoint):
                assert endpoint.startswith("tcp://127.0.0.1:")
                ports.add(port_of(endpoint))
        assert len(ports) == 6  # every node binds its own ephemeral ports

        added = await cluster.add_node(slots=4)
        assert added.name == "node-4"
        async with open_client(cluster.address) as client:
            nodes = await client.nodes()
        assert [(n["node_id"], n["slots"]) for n in nodes][-1] == ("node-4", 4)


@pytest.mark.asyncio
async def test_a_job_runs_to_finished(inprocess_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, JOB)
    modules_before = set(sys.modules)
    async with inprocess_cluster(nodes=2, slots=2) as cluster:
        status, collected = await run_job(cluster.address, job_file, base_dir=tmp_path)
        assert [m for m in sys.modules if m.startswith("mesh_job_") and m not in modules_before]
    assert status["state"] == "FINISHED", status["error"]
    assert sorted(collected) == [x * x for x in range(50)]
    placed = {s["node"] for t in status["tasks"] for s in t["subtasks"]}
    assert placed == {"node-1", "node-2"}
    # The nodes' job modules are gone from this process with the cluster.
    assert [m for m in sys.modules if m.startswith("mesh_job_") and m not in modules_before] == []


@pytest.mark.asyncio
async def test_a_node_stopped_gracefully_leaves_at_once(inprocess_cluster) -> None:
    # Heartbeats are far apart: only a leave can make the node go within the deadline.
    cluster = inprocess_cluster(nodes=2, slots=1, heartbeat_timeout_ms=60_000)
    async with cluster:
        await cluster.stop_node("node-2")
        assert not cluster.node("node-2").running
        async with open_client(cluster.address) as client:
            nodes = await client.nodes()
        assert [n["node_id"] for n in nodes] == ["node-1"]


@pytest.mark.asyncio
async def test_stop_cleans_up_every_socket_and_task_even_if_the_body_raised(
    inprocess_cluster,
) -> None:
    tasks_before = asyncio.all_tasks()
    fds_before = open_fds()
    cluster = inprocess_cluster(nodes=2, slots=1)
    with pytest.raises(RuntimeError, match="the test body failed"):
        async with cluster:
            ports = [port_of(cluster.address)] + [
                port_of(e)
                for n in cluster.nodes
                for e in (n.address.data_endpoint, n.address.control_endpoint)
            ]
            assert not any(port_is_free(p) for p in ports)  # all of them listen now
            async with open_client(cluster.address) as client:
                assert len(await client.nodes()) == 2
            raise RuntimeError("the test body failed")
    assert cluster.stopped and not any(n.running for n in cluster.nodes)
    assert asyncio.all_tasks() == tasks_before
    assert [p for p in ports if not port_is_free(p)] == []
    assert open_fds() == fds_before
    with pytest.raises(MeshError, match="not running"):
        await cluster.add_node()


@pytest.mark.asyncio
async def test_a_daemon_that_crashes_fails_the_block(inprocess_cluster) -> None:
    cluster = inprocess_cluster(nodes=1, slots=1)
    with pytest.raises(BaseExceptionGroup) as failure:
        async with cluster:
            node = cluster.node("node-1").daemon

            def broken() -> None:
                raise ValueError("a bug in a heartbeat")

            node._heartbeat = broken  # type: ignore[method-assign]
            await anyio.sleep_forever()  # until the node's next heartbeat fails
    assert failure.group_contains(ValueError, match="a bug in a heartbeat")
    assert cluster.stopped


@pytest.mark.asyncio
async def test_with_a_manual_clock_a_heartbeat_timeout_fires_only_when_the_clock_moves(
    inprocess_cluster,
) -> None:
    clock = ManualClock()
    cluster = inprocess_cluster(
        nodes=1, slots=1, clock=clock, heartbeat_interval_ms=100, heartbeat_timeout_ms=1000
    )
    async with cluster, open_client(cluster.address) as client:
        await cluster.crash_node("node-1")  # gone without a word: no more heartbeats

        # Nothing to wait for: real time passing (longer than the timeout) changes nothing.
        await anyio.sleep(1.5)
        assert [n["node_id"] for n in await client.nodes()] == ["node-1"]

        clock.advance(1000)  # 1000 ms since its last word: not more than the timeout
        for _ in range(3):
            assert [n["node_id"] for n in await client.nodes()] == ["node-1"]

        clock.advance(100)  # 1100 ms: the coordinator's monitor declares it lost
        await poll_until(
            client.nodes,
            until=lambda nodes: nodes == [],
            timeout_s=10,
            what="node-1 declared lost",
        )


def test_it_refuses_to_run_with_fault_points(tmp_path: Path, monkeypatch) -> None:
    from mesh import faults

    monkeypatch.setattr(faults, "_PLAN", {"snapshot.writing": 1})

    async def start() -> None:
        async with InProcessCluster(nodes=1, state_dir=tmp_path):
            raise AssertionError("must not start")

    with pytest.raises(MeshError, match="MESH_FAULTS is set"):
        anyio.run(start)
