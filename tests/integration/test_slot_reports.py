"""Nodes report the slots their subtasks occupy; the coordinator never hands those out.

A node registering with a coordinator that does not know its jobs (the coordinator
restarted, or declared the node lost) says which slots are still busy; the coordinator
keeps them out of scheduling until a heartbeat from the node says they are free. The
node here is a plain ZeroMQ DEALER speaking the control protocol, so the test decides
exactly what it reports; the coordinator and the other node are real daemons.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import zmq

from mesh._version import __version__
from mesh.client.client import open_client, prepare_submission
from mesh.protocol import codec
from mesh.protocol.messages import (
    Heartbeat,
    HeartbeatAck,
    RegisterNode,
    RegisterReply,
    SlotInUse,
)
from tests.helpers import wait_for_state, write_job

WIDE = """
    from mesh import Job, sinks, sources

    job = Job("wide", parallelism=4)
    job.source(sources.Collection(range(10))).sink(sinks.Collect())
"""


def _request(dealer: zmq.Socket[bytes], msg: Any) -> Any:
    dealer.send_multipart(codec.encode(msg, rid="r1"))
    if not dealer.poll(10_000):
        raise AssertionError(f"no answer to {type(msg).__name__} within 10 s")
    return codec.decode(dealer.recv_multipart()).message


async def _nodes_by_id(client: Any) -> dict[str, dict[str, Any]]:
    return {n["node_id"]: n for n in await client.nodes()}


def test_slots_a_node_reports_busy_stay_out_of_scheduling(local_cluster, tmp_path: Path) -> None:
    # The fake node never heartbeats on its own: a long timeout keeps it registered.
    cluster = local_cluster(nodes=1, slots=2, env={"MESH_HEARTBEAT_TIMEOUT": "60s"})
    job_file = write_job(tmp_path, WIDE)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.IDENTITY, b"ghost")
    dealer.connect(cluster.address)
    busy = [SlotInUse(slot=0, job_id="gone-job", attempt=3)]
    busy.append(SlotInUse(slot=2, job_id="gone-job", attempt=3))

    async def scenario() -> tuple[dict[str, Any], ...]:
        async with open_client(cluster.address) as client:
            reply = _request(
                dealer,
                RegisterNode(
                    node_id="ghost",
                    slots=3,
                    data_endpoint="tcp://127.0.0.1:9",
                    control_endpoint="tcp://127.0.0.1:9",
                    host="ghost-host",
                    pid=os.getpid(),
                    version=__version__,
                    occupied=busy,
                ),
            )
            assert isinstance(reply, RegisterReply) and reply.ok, reply
            registered = await _nodes_by_id(client)
            # 2 + 3 slots, but 2 of ghost's are busy: a job needing 4 waits.
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            waiting = await client.status(job_id)
            await client.cancel(job_id)
            await wait_for_state(client, job_id, ("CANCELED",))
            # The next heartbeat says the slots are free.
            assert isinstance(_request(dealer, Heartbeat(node_id="ghost")), HeartbeatAck)
            freed = await _nodes_by_id(client)
            return registered, waiting, freed

    try:
        registered, waiting, freed = anyio.run(scenario)
    finally:
        dealer.close()
        context.term()

    ghost = registered["ghost"]
    assert (ghost["slots"], ghost["used"], ghost["free"]) == (3, 2, 1)
    assert ghost["jobs"] == ["gone-job"]
    assert waiting["state"] == "SCHEDULING"
    assert (
        "job needs 4 slot(s) (default: 4) but the cluster has 3 free" in waiting["slots"]["waiting"]
    )
    assert "ghost offers 1 free of 3" in waiting["slots"]["waiting"]
    assert "node-1 offers 2 free of 2" in waiting["slots"]["waiting"]
    assert (freed["ghost"]["used"], freed["ghost"]["free"], freed["ghost"]["jobs"]) == (0, 3, [])
    assert freed["node-1"]["free"] == 2
