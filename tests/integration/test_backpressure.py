"""Credit-based backpressure on real daemons.

Two pipelines cross the same node pair (sources on node-1, consumers on node-2), so
their channels share one ZeroMQ connection. The slow pipeline's sink pushes to an
outside consumer that never reads: its sink waits, its subtask stops granting credit,
and its source stalls. The fast pipeline must keep flowing at full speed over the same
connection (no head-of-line blocking) and memory must stay bounded on both nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import zmq

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job

JOB = """
    from mesh import Job, sinks, sources

    job = Job("backpressure", parallelism=1, buffer_timeout="5ms")
    payload = "x" * 200

    slow = job.source(sources.Generator(lambda i: {{"i": i, "pad": payload}}))
    slow = slow.name("slow source").slot_sharing_group("sources")
    (
        slow.rebalance()
        .map(lambda r: r)
        .name("slow consumer")
        .slot_sharing_group("consumers")
        .sink(sinks.ZmqPush("{endpoint}", high_water_mark=10))
    )
    {fast}
"""

FAST = """
    fast = job.source(sources.Generator(lambda i: {"i": i, "pad": payload}))
    fast = fast.name("fast source").slot_sharing_group("sources")
    (
        fast.rebalance()
        .filter(lambda r: False)
        .name("fast consumer")
        .slot_sharing_group("consumers")
        .sink(sinks.Collect())
    )
"""


def subtask(status: dict[str, Any], name: str) -> dict[str, Any]:
    for task in status["tasks"]:
        if task["name"].startswith(name):
            return dict(task["subtasks"][0])
    raise AssertionError(f"no task {name!r} in {[t['name'] for t in status['tasks']]}")


async def rate_of(client: Any, job_id: str, name: str, records: int) -> tuple[float, Any, Any]:
    """Records/s of subtask ``name`` while it processes ``records`` more records."""
    first = await client.status(job_id)
    start_count, start_time = subtask(first, name)["records_in"], time.monotonic()
    last = await poll_until(
        lambda: client.status(job_id),
        until=lambda last: subtask(last, name)["records_in"] - start_count >= records,
        timeout_s=60,
        what=f"{records} more records into {name}",
        show=lambda last: str(subtask(last, name)["records_in"] - start_count),
    )
    done = subtask(last, name)["records_in"] - start_count
    return done / (time.monotonic() - start_time), first, last


async def node_rss(client: Any) -> dict[str, int]:
    return {n["node_id"]: n["rss_bytes"] for n in await client.nodes()}


@pytest.mark.slow
def test_slow_channel_stalls_its_producer_but_not_the_fast_channel(
    local_cluster, tmp_path: Path
) -> None:
    context = zmq.Context()
    outside = context.socket(zmq.PULL)
    outside.setsockopt(zmq.RCVHWM, 10)
    outside.setsockopt(zmq.LINGER, 0)
    port = outside.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    both = write_job(tmp_path, JOB.format(endpoint=endpoint, fast=FAST), "both.py")
    fast_only = write_job(
        tmp_path, JOB.format(endpoint=endpoint, fast=FAST).split("    slow = ")[0] + FAST, "f.py"
    )
    cluster = local_cluster(nodes=2, slots=1, env={"MESH_HEARTBEAT_INTERVAL": "100ms"})

    async def scenario() -> dict[str, Any]:
        async with open_client(cluster.address) as client:
            # Baseline: the fast pipeline alone.
            job_id = await client.submit(prepare_submission(fast_only, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            baseline, _, _ = await rate_of(client, job_id, "fast consumer", 2_000_000)
            await client.cancel(job_id)
            await wait_for_state(client, job_id, ("CANCELED",))

            job_id = await client.submit(prepare_submission(both, base_dir=tmp_path))
            status = await wait_for_state(client, job_id, ("RUNNING",))
            placement = {t["name"]: t["subtasks"][0]["node"] for t in status["tasks"]}
            # Wait until the slow source is stalled: backpressured, and no progress
            # across several heartbeats.
            seen: list[int] = []

            async def stalled() -> bool:
                src = subtask(await client.status(job_id), "slow source")
                seen.append(src["records_in"])
                return src["backpressure_ms"] > 0 and len(seen) > 5 and len(set(seen[-5:])) == 1

            await poll_until(stalled, timeout_s=60, interval_s=0.1, what="the slow source to stall")
            rss_before = await node_rss(client)
            stalled_rate, first, last = await rate_of(client, job_id, "fast consumer", 2_000_000)
            rss_after = await node_rss(client)
            await client.cancel(job_id)
            await wait_for_state(client, job_id, ("CANCELED",))
            return {
                "baseline": baseline,
                "stalled_rate": stalled_rate,
                "first": first,
                "last": last,
                "placement": placement,
                "rss_before": rss_before,
                "rss_after": rss_after,
            }

    try:
        result = anyio.run(scenario)
    finally:
        outside.close()
        context.term()

    placement = result["placement"]
    assert placement["slow source"] == placement["fast source"]
    assert (
        placement["slow consumer -> Sink: ZmqPush"] == placement["fast consumer -> Sink: Collect"]
    )
    assert placement["slow source"] != placement["slow consumer -> Sink: ZmqPush"]
    first, last = result["first"], result["last"]
    # The slow producer is stalled for the whole measurement, and knows why.
    assert subtask(last, "slow source")["records_in"] == subtask(first, "slow source")["records_in"]
    assert (
        subtask(last, "slow source")["backpressure_ms"]
        > subtask(first, "slow source")["backpressure_ms"]
    )
    # The fast channel over the same connection keeps (most of) its throughput.
    print(
        f"fast pipeline: alone {result['baseline']:,.0f}/s, "
        f"next to a stalled channel {result['stalled_rate']:,.0f}/s; "
        f"RSS before {result['rss_before']}, after {result['rss_after']}"
    )
    assert result["stalled_rate"] >= 0.5 * result["baseline"]
    # Memory stays bounded while 1M more records flowed and the slow source waited.
    for node, before in result["rss_before"].items():
        assert result["rss_after"][node] - before < 32 * 1024 * 1024, (node, before)
