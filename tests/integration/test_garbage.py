"""Garbage on the wire: daemons count and log it, and keep serving other jobs.

Random bytes, truncated multipart messages, bad versions and frames for unknown jobs
are sent to a node's data (PULL) and credit (ROUTER) ports and to the coordinator. A
frame that breaks a channel's sequence fails only the job that owns the channel.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import zmq

from mesh.client.client import open_client, prepare_submission
from mesh.graph.execution import build_execution_graph
from mesh.graph.logical import LogicalGraph
from mesh.transport.frames import FrameKind, encode_header
from tests.helpers import poll_until, read_parts, run_job, wait_for_state, write_job

UNBOUNDED = """
    from mesh import Job, sinks, sources

    job = Job("{name}", parallelism=2)
    numbers = job.source(sources.Generator(lambda i: i, rate=2000))
    numbers.key_by(lambda n: n % 10).count().filter(lambda r: False).sink(sinks.Collect())
"""

BOUNDED = """
    from mesh import Job, sinks, sources

    job = Job("after-garbage", parallelism=2)
    numbers = job.source(sources.Collection(range(20_000)))
    numbers.key_by(lambda n: n % 10).count().sink(sinks.JsonLines("out"))
"""


def garbage_messages(rng: random.Random) -> list[list[bytes]]:
    valid = encode_header(FrameKind.DATA, "0123456789abcdef", 0, 0, 0, 0)
    messages: list[list[bytes]] = [
        [b""],
        [rng.randbytes(1)],
        [rng.randbytes(40)],
        [rng.randbytes(40), rng.randbytes(2000)],
        [rng.randbytes(10), rng.randbytes(10), rng.randbytes(10)],
        [valid],  # a header without its payload
        [valid[:12], b"[1,2,3]"],  # a truncated header
        [b"MF\x09" + valid[3:], b"[]"],  # a future version
        [valid, b"[1,2,3]"],  # a well-formed frame for a job nobody runs
        [b"MF\x01\x63" + valid[4:], b""],  # an unknown frame kind
    ]
    messages += [
        [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 4))] for _ in range(40)
    ]
    return messages


def test_garbage_never_stops_a_daemon(local_cluster, tmp_path: Path) -> None:
    unbounded = write_job(tmp_path, UNBOUNDED.format(name="background"), "background.py")
    bounded = write_job(tmp_path, BOUNDED, "bounded.py")
    cluster = local_cluster(nodes=2, slots=2)
    rng = random.Random(7)
    context = zmq.Context()

    def spray() -> None:
        for node in cluster.nodes:
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(node.ready["MESH_DATA_ENDPOINT"])
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 1000)
            dealer.connect(node.ready["MESH_CONTROL_ENDPOINT"])
            for message in garbage_messages(rng):
                push.send_multipart(message)
                dealer.send_multipart(message)
            push.close()
            dealer.close()
        coordinator = context.socket(zmq.DEALER)
        coordinator.setsockopt(zmq.LINGER, 1000)
        coordinator.connect(cluster.address)
        for message in garbage_messages(rng):
            coordinator.send_multipart(message)
        coordinator.send_multipart([b'{"v":1,"type":"submit_job"}', b'{"graph": 5}'])
        coordinator.close()

    async def scenario() -> dict[str, Any]:
        async with open_client(cluster.address) as client:
            background = await client.submit(prepare_submission(unbounded, base_dir=tmp_path))
            await wait_for_state(client, background, ("RUNNING",))
            spray()
            # The nodes counted (and dropped) the garbage ...
            nodes = await poll_until(
                client.nodes,
                until=lambda nodes: all(n["wire_errors"] > 0 for n in nodes),
                timeout_s=30,
                interval_s=0.1,
                what="every node to count wire errors",
            )
            # ... and still run the background job and a new one.
            status, _ = await run_job(cluster.address, bounded, base_dir=tmp_path)
            still = await client.status(background)
            await client.cancel(background)
            return {"nodes": nodes, "bounded": status, "background": still}

    try:
        result = anyio.run(scenario)
    finally:
        context.term()

    assert all(d.alive() for d in [cluster.coordinator, *cluster.nodes])
    assert result["background"]["state"] == "RUNNING"
    assert result["bounded"]["state"] == "FINISHED", result["bounded"]["error"]
    counts = sorted((r["key"], r["count"]) for r in read_parts(tmp_path / "out"))
    assert counts == sorted((k, n) for k in range(10) for n in range(1, 2001))
    assert all(n["wire_errors"] >= 40 for n in result["nodes"])
    log = (cluster.log_dir / "node-1.log").read_text()
    assert "dropped a message (malformed" in log and "dropped a message (unknown_job" in log
    coordinator_log = (cluster.log_dir / "coordinator.log").read_text()
    assert "dropped a message (malformed" in coordinator_log


def test_a_broken_channel_fails_only_its_job(local_cluster, tmp_path: Path) -> None:
    victim_file = write_job(tmp_path, UNBOUNDED.format(name="victim"), "victim.py")
    bystander_file = write_job(tmp_path, UNBOUNDED.format(name="bystander"), "bystander.py")
    cluster = local_cluster(nodes=2, slots=2)
    context = zmq.Context()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with open_client(cluster.address) as client:
            victim_sub = prepare_submission(victim_file, base_dir=tmp_path)
            victim = await client.submit(victim_sub)
            bystander = await client.submit(prepare_submission(bystander_file, base_dir=tmp_path))
            status = await wait_for_state(client, victim, ("RUNNING",))
            await wait_for_state(client, bystander, ("RUNNING",))
            # A frame far ahead in the sequence of a channel into node-2.
            eg = build_execution_graph(LogicalGraph.from_dict(victim_sub.graph))
            placement = {s["subtask"]: s["node"] for t in status["tasks"] for s in t["subtasks"]}
            channel = next(c for c in eg.channels if placement[str(c.consumer)] == "node-2")
            node = next(n for n in cluster.nodes if n.name == "node-2")
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(node.ready["MESH_DATA_ENDPOINT"])
            header = encode_header(FrameKind.DATA, victim, 0, channel.id, 1_000_000, 0)
            push.send_multipart([header, b"[1]"])
            push.close()
            failed = await wait_for_state(client, victim, ("FAILED",), timeout_s=30)
            other = await client.status(bystander)
            await client.cancel(bystander)
            return failed, other, f"{victim}#{channel.id}"

    try:
        failed, other, label = anyio.run(scenario)
    finally:
        context.term()

    assert "sequence gap (expected" in failed["error"]
    assert label in failed["error"]
    assert other["state"] == "RUNNING"
