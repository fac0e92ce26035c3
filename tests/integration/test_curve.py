"""CURVE keys on a real cluster (real sockets, real ZAP handlers): jobs run with keys,
and a client, node or peer whose key is not allowed gets nothing in."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import anyio
import pytest

from mesh.client.client import open_client
from mesh.node.daemon import Node, NodeConfig
from mesh.testing import InProcessCluster
from mesh.transport.curve import Curve
from mesh.transport.frames import FrameKind, encode_header
from mesh.transport.handshake import HandshakeFailed
from mesh.transport.keys import generate_keys
from mesh.transport.sockets import SocketFactory, SocketKind
from tests.helpers import poll_until, run_job, write_job

JOB = """
    from mesh import Job, sinks, sources

    job = Job("squares", parallelism=2)
    job.source(sources.Collection(list(range(200)))).rebalance().map(lambda x: x * x).sink(
        sinks.Collect()
    )
"""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """The cluster's keys (coordinator, node, client, all allowed)."""
    directory = tmp_path / "keys"
    generate_keys(directory, ["coordinator", "node", "client"])
    return directory


@pytest.fixture
def rogue(tmp_path: Path, keys: Path) -> Path:
    """Keys of someone not allowed in: own pairs, but the cluster's public server keys."""
    directory = tmp_path / "rogue"
    generate_keys(directory, ["client", "node"])
    for name in ("coordinator", "node"):
        shutil.copy(keys / f"{name}.key", directory / f"{name}.key")
    return directory


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]


@pytest.mark.asyncio
async def test_a_job_runs_end_to_end_with_keys(tmp_path: Path, keys: Path) -> None:
    job_file = write_job(tmp_path, JOB)
    async with InProcessCluster(nodes=2, slots=1, state_dir=tmp_path / "c", keys=keys) as cluster:
        status, collected = await run_job(cluster.address, job_file, base_dir=tmp_path, keys=keys)
        async with open_client(cluster.address, keys=keys) as client:
            nodes = await client.nodes()
    assert status["state"] == "FINISHED", status.get("error")
    assert sorted(collected) == [x * x for x in range(200)]
    assert [n["node_id"] for n in nodes] == ["node-1", "node-2"]
    # one slot per node, parallelism 2: the rebalance crossed the (CURVE) data plane
    assert {row["node"] for row in status["placement"]} == {"node-1", "node-2"}


@pytest.mark.asyncio
async def test_a_client_without_an_allowed_key_is_refused_clearly(
    tmp_path: Path, keys: Path, rogue: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mesh.transport.zap")
    async with InProcessCluster(nodes=1, slots=1, state_dir=tmp_path / "c", keys=keys) as cluster:
        with pytest.raises(HandshakeFailed) as refused:
            async with open_client(cluster.address, keys=rogue, timeout_s=10):
                raise AssertionError("the handshake must fail")  # pragma: no cover
        assert str(refused.value).startswith(
            f"the coordinator at {cluster.address} did not accept this client's key"
        )
        assert "--keys" in str(refused.value)
        # a client without keys at all is told the coordinator speaks CURVE
        with pytest.raises(TimeoutError):
            async with open_client(cluster.address, timeout_s=1) as keyless:
                await keyless.list_jobs()
        found = await poll_until(
            lambda: refusals(caplog), timeout_s=10, what="the coordinator logs the refusal"
        )
        assert "from 127.0.0.1" in found[0] and "key not allowed" in found[0]
        async with open_client(cluster.address, keys=keys) as client:
            assert await client.list_jobs() == []  # nothing was submitted


@pytest.mark.asyncio
async def test_a_node_without_an_allowed_key_cannot_register(
    tmp_path: Path, keys: Path, rogue: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with InProcessCluster(nodes=1, slots=1, state_dir=tmp_path / "c", keys=keys) as cluster:
        intruder = Node(
            NodeConfig(
                coordinator=cluster.address,
                state_dir=tmp_path / "intruder",
                node_id="intruder",
                register_timeout_s=0.5,
                curve=Curve.load(rogue, ["node"], serve=True),
            )
        )
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(intruder.run)

                def told() -> list[str]:
                    return [
                        r.getMessage()
                        for r in caplog.records
                        if "node intruder cannot register" in r.getMessage()
                    ]

                said = await poll_until(told, timeout_s=15, what="the node says why")
                scope.cancel()
        assert "did not accept this node's key" in said[0]
        logged = refusals(caplog)
        assert logged and "from 127.0.0.1" in logged[0]
        async with open_client(cluster.address, keys=keys) as client:
            assert [n["node_id"] for n in await client.nodes()] == ["node-1"]


@pytest.mark.asyncio
async def test_a_peer_without_an_allowed_key_cannot_push_data(
    tmp_path: Path, keys: Path, rogue: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mesh.transport.zap")
    frame = [encode_header(FrameKind.DATA, "f00dfeedf00dfeed", 1, 0, 0, 0), b"[1,2,3]"]
    async with InProcessCluster(nodes=1, slots=1, state_dir=tmp_path / "c", keys=keys) as cluster:
        node = cluster.nodes[0]
        assert node.address is not None
        drops = node.daemon._network.drops  # type: ignore[union-attr]  # what reached the pump
        before = drops.total
        with SocketFactory(curve=Curve.load(rogue, ["node"], serve=False)) as bad:
            push = bad.connect(SocketKind.PUSH, node.address.data_endpoint, server=("node",))
            push.send_nowait(frame)
            await poll_until(lambda: refusals(caplog), timeout_s=10, what="the refusal")
        assert drops.total == before  # the frame never reached the node's pump
        # the same frame from an allowed key does reach it (and is dropped: no such job)
        with SocketFactory(curve=Curve.load(keys, ["node"], serve=False)) as good:
            push = good.connect(SocketKind.PUSH, node.address.data_endpoint, server=("node",))
            push.send_nowait(frame)
            await poll_until(
                lambda: drops.counts["unknown_job"], timeout_s=10, what="the allowed frame"
            )
        assert drops.total == before + 1


@pytest.mark.asyncio
async def test_connectors_to_outside_systems_stay_plain_zeromq(tmp_path: Path, keys: Path) -> None:
    import zmq
    import zmq.asyncio

    context = zmq.asyncio.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    job_file = write_job(
        tmp_path,
        f"""
        from mesh import Job, sinks, sources

        job = Job("push", parallelism=1)
        job.source(sources.Collection(list(range(20)))).sink(
            sinks.ZmqPush("tcp://127.0.0.1:{port}")
        )
        """,
    )
    try:
        async with InProcessCluster(
            nodes=1, slots=1, state_dir=tmp_path / "c", keys=keys
        ) as cluster:
            status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path, keys=keys)
            received = []
            with anyio.fail_after(10):
                while len(received) < 20:
                    received.append(int(await pull.recv()))
    finally:
        pull.close()
        context.term()
    assert status["state"] == "FINISHED", status["error"]
    assert sorted(received) == list(range(20))
