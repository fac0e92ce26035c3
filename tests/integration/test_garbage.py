"""Garbage on the wire: daemons count and log it, and keep serving other jobs.

Random bytes, truncated multipart messages, bad versions and frames for unknown jobs
are sent to a node's data (PULL) and credit (ROUTER) ports and to the coordinator.
Frames that are valid but for the channel token (forged: not from the channel's deployed
producer or consumer) are dropped too, whatever their sequence number or payload.
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
from mesh.transport.batches import encode_batch
from mesh.transport.frames import NO_TOKEN, FrameKind, encode_header
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


def _remote_channels(graph: dict[str, Any], status: dict[str, Any]) -> list[tuple[Any, str]]:
    """The job's channels whose producer and consumer run on different nodes, each with
    the consumer's node."""
    eg = build_execution_graph(LogicalGraph.from_dict(graph))
    placement = {s["subtask"]: s["node"] for t in status["tasks"] for s in t["subtasks"]}
    return [
        (c, placement[str(c.consumer)])
        for c in eg.channels
        if placement[str(c.consumer)] != placement[str(c.producer)]
    ]


FORGERY_TARGET = """
    from mesh import Job, sinks, sources

    job = Job("forgery-target", parallelism=2)
    numbers = job.source(sources.Generator(lambda i: i, count=6000, rate=3000))
    numbers.rebalance().map(lambda n: n).sink(sinks.Collect())
"""


def test_forged_frames_never_reach_operators(local_cluster, tmp_path: Path) -> None:
    """DATA frames that are well-formed in every way but the channel token — right job,
    attempt and channel, every sequence number the channel will use, records that would
    show in the output — and forged credits are dropped and counted; the job finishes
    with exactly its own records. (Cutting the forger off is turned off here, so that
    every frame is counted: tests/integration/test_bad_peers.py.)"""
    job_file = write_job(tmp_path, FORGERY_TARGET, "target.py")
    cluster = local_cluster(nodes=2, slots=2, env={"MESH_MAX_BAD_MESSAGES": "0"})
    context = zmq.Context()
    forged_batch = encode_batch([-1, -2, -3])
    endpoints = {n.name: n.ready for n in cluster.nodes}

    def forge(job_id: str, channels: list[tuple[Any, str]]) -> int:
        sent = 0
        for channel, node in channels:
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 2000)
            push.connect(endpoints[node]["MESH_DATA_ENDPOINT"])
            for seq in range(1500):
                for token in (NO_TOKEN, random.Random(seq).randbytes(16)):
                    header = encode_header(
                        FrameKind.DATA, job_id, 0, channel.id, seq, 0, token=token
                    )
                    push.send_multipart([header, forged_batch])
                    sent += 1
            push.close()
            # Credits for the producer's side: a forger must not be able to inflate them.
            producer_node = next(n for n in endpoints if n != node)
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 2000)
            dealer.connect(endpoints[producer_node]["MESH_CONTROL_ENDPOINT"])
            for _ in range(50):
                header = encode_header(FrameKind.CREDIT, job_id, 0, channel.id, 0, 1_000_000)
                dealer.send_multipart([header])
                sent += 1
            dealer.close()
        return sent

    async def scenario() -> tuple[dict[str, Any], list[Any], list[dict[str, Any]], int]:
        async with open_client(cluster.address) as client:
            submission = prepare_submission(job_file, base_dir=tmp_path)
            job_id = await client.submit(submission)
            status = await wait_for_state(client, job_id, ("RUNNING",))
            channels = _remote_channels(submission.graph, status)
            assert channels, "the job must have channels between the nodes"
            sent = await anyio.to_thread.run_sync(forge, job_id, channels)
            final = await wait_for_state(client, job_id, ("FINISHED", "FAILED"), timeout_s=60)
            assert final["state"] == "FINISHED", final["error"]
            records: list[Any] = []
            offset, complete = 0, final["state"] != "FINISHED"
            while not complete:
                batch, offset, complete = await client.fetch_collected(job_id, offset)
                records.extend(batch)
            nodes = await poll_until(
                client.nodes,
                until=lambda nodes: sum(n["wire_errors"] for n in nodes) >= sent,
                timeout_s=30,
                interval_s=0.2,
                what="the nodes to count every forged frame",
            )
            return final, records, nodes, sent

    try:
        final, records, nodes, sent = anyio.run(scenario)
    finally:
        context.term()

    assert final["state"] == "FINISHED", final["error"]
    assert final["attempt"] == 0
    assert sorted(records) == list(range(6000))
    assert sum(n["wire_errors"] for n in nodes) >= sent
    logs = "".join((cluster.log_dir / f"{n.name}.log").read_text() for n in cluster.nodes)
    assert "dropped a message (forged" in logs
    assert "without the channel's token" in logs


def test_a_frame_without_the_token_cannot_break_a_channel(local_cluster, tmp_path: Path) -> None:
    """A frame far ahead in a channel's sequence, but not from its producer, is dropped:
    the job keeps running. (A genuine gap fails the gate: tests/unit/test_channels.py.)"""
    victim_file = write_job(tmp_path, UNBOUNDED.format(name="victim"), "victim.py")
    cluster = local_cluster(nodes=2, slots=2)
    context = zmq.Context()

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with open_client(cluster.address) as client:
            victim_sub = prepare_submission(victim_file, base_dir=tmp_path)
            victim = await client.submit(victim_sub)
            status = await wait_for_state(client, victim, ("RUNNING",))
            channel, node_name = _remote_channels(victim_sub.graph, status)[0]
            node = next(n for n in cluster.nodes if n.name == node_name)
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(node.ready["MESH_DATA_ENDPOINT"])
            header = encode_header(FrameKind.DATA, victim, 0, channel.id, 1_000_000, 0)
            push.send_multipart([header, b"[1]"])
            push.close()
            await poll_until(
                node.log_path.read_text,
                until=lambda text: "dropped a message (forged" in text,
                timeout_s=30,
                interval_s=0.1,
                what="the node to drop the forged frame",
            )
            # Still running, after the node's next heartbeat.
            nodes = await poll_until(
                client.nodes,
                until=lambda nodes: any(n["wire_errors"] > 0 for n in nodes),
                timeout_s=30,
                interval_s=0.1,
                what="the node to report the drop",
            )
            still = await client.status(victim)
            await client.cancel(victim)
            return still, nodes

    try:
        still, _ = anyio.run(scenario)
    finally:
        context.term()

    assert still["state"] == "RUNNING", still["error"]
    assert still["attempt"] == 0
