"""Peers that misbehave, against real daemons: a connection that keeps sending malformed
messages is cut (a node's data and credit ports, the coordinator's control port) and the
daemon names its address; one that sends a message part over the size limit is named
too; the running job does not notice either."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import zmq
from zmq.utils.monitor import recv_monitor_message

from mesh.client.client import open_client, prepare_submission
from mesh.transport.frames import FrameKind, encode_header
from tests.helpers import poll_until, poll_until_sync, wait_for_state, write_job

BACKGROUND = """
    from mesh import Job, sinks, sources

    job = Job("background", parallelism=2)
    numbers = job.source(sources.Generator(lambda i: i, rate=2000))
    numbers.key_by(lambda n: n % 10).count().filter(lambda r: False).sink(sinks.Collect())
"""

LIMIT = 20


def _cut_off(context: zmq.Context[zmq.Socket[bytes]], kind: int, endpoint: str) -> int:
    """Send garbage over one connection until the daemon cuts it; how many were sent."""
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    sock.connect(endpoint)
    try:
        assert monitor.poll(10_000), "no connection to " + endpoint
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        for n in range(LIMIT):
            sock.send_multipart([b"garbage %d" % n, b"x"])
        poll_until_sync(
            lambda: monitor.poll(100) and recv_monitor_message(monitor)["event"],
            until=lambda event: event == zmq.EVENT_DISCONNECTED,
            timeout_s=10,
            interval_s=0,
            what=f"{endpoint} to cut the connection",
        )
        return LIMIT
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def test_peers_sending_garbage_are_cut_off_and_named(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, BACKGROUND, "background.py")
    cluster = local_cluster(
        nodes=2,
        slots=2,
        env={"MESH_MAX_BAD_MESSAGES": str(LIMIT), "MESH_MAX_FRAME_SIZE": "1MiB"},
    )
    node = cluster.nodes[0]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()

    async def scenario() -> tuple[dict, dict]:  # type: ignore[type-arg]
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            before = await wait_for_state(client, job_id, ("RUNNING",))
            # One malformed message, and once the node has counted it (so it knows who
            # sent it), one too large on the same connection.
            push = context.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 2000)
            push.connect(node.ready["MESH_DATA_ENDPOINT"])
            push.send_multipart([b"hello"])
            await poll_until(
                client.nodes,
                until=lambda nodes: sum(n["wire_errors"] for n in nodes) == 1,
                timeout_s=30,
                what="the node to count the malformed message",
            )
            push.send_multipart([encode_header(FrameKind.DATA, job_id, 0, 0), bytes(2 << 20)])
            push.close()
            await poll_until(
                node.log_path.read_text,
                until=lambda text: "over max_frame_size" in text,
                timeout_s=30,
                what="the node to report the oversized message part",
            )
            for kind, endpoint in (
                (zmq.PUSH, node.ready["MESH_DATA_ENDPOINT"]),
                (zmq.DEALER, node.ready["MESH_CONTROL_ENDPOINT"]),
                (zmq.DEALER, cluster.address),
            ):
                await anyio.to_thread.run_sync(_cut_off, context, kind, endpoint)
            processed = sum(s["records_in"] for t in before["tasks"] for s in t["subtasks"])
            after = await poll_until(
                lambda: client.status(job_id),
                until=lambda s: (
                    sum(x["records_in"] for t in s["tasks"] for x in t["subtasks"]) > processed
                ),
                timeout_s=30,
                what="records to keep flowing",
            )
            await client.cancel(job_id)
            return before, after

    try:
        _, after = anyio.run(scenario)
    finally:
        context.term()

    assert after["state"] == "RUNNING" and after["restarts"] == 0, after["error"]
    node_log = node.log_path.read_text()
    peer = r"127\.0\.0\.1:\d+"
    for port in ("data port", "credit port"):
        assert re.search(
            rf"disconnected {peer} from the {port}: {LIMIT} malformed or forged messages", node_log
        ), port
    assert re.search(
        rf"the data port dropped the connection from {peer}: it sent a message part over "
        r"max_frame_size \(1 MiB\)",
        node_log,
    )
    coordinator_log = cluster.coordinator.log_path.read_text()
    assert re.search(
        rf"disconnected {peer} from the control port: {LIMIT} malformed or forged messages",
        coordinator_log,
    )
