"""Backpressure under a stalled consumer: throughput of a neighbour channel and memory.

Two pipelines cross the same node pair (sources on node-1, consumers on node-2). The
slow one pushes to an outside ZeroMQ consumer that never reads; the fast one flows.
Every second this samples each node's RSS and both pipelines' record counts, and
prints JSON at the end.

    python bench/backpressure.py --seconds 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mesh.client.client import open_client, prepare_submission  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402

JOB = """
from mesh import Job, sinks, sources

job = Job("backpressure", parallelism=1, buffer_timeout="5ms")
payload = "x" * 200
slow = job.source(sources.Generator(lambda i: {{"i": i, "pad": payload}}))
slow = slow.name("slow source").slot_sharing_group("sources")
slow.rebalance().map(lambda r: r).name("slow consumer").slot_sharing_group("consumers").sink(
    sinks.ZmqPush("{endpoint}", high_water_mark=10)
)
fast = job.source(sources.Generator(lambda i: {{"i": i, "pad": payload}}))
fast = fast.name("fast source").slot_sharing_group("sources")
fast.rebalance().filter(lambda r: False).name("fast consumer").slot_sharing_group(
    "consumers"
).sink(sinks.Collect())
"""


def counts(status: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for task in status["tasks"]:
        sub = task["subtasks"][0]
        out[task["name"].split(" ->")[0]] = {
            "records_in": sub["records_in"],
            "backpressure_ms": sub["backpressure_ms"],
        }
    return out


async def sample(address: str, job_file: Path, seconds: float) -> list[dict[str, Any]]:
    samples = []
    async with open_client(address) as client:
        job_id = await client.submit(prepare_submission(job_file, base_dir=job_file.parent))
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            await anyio.sleep(1.0)
            nodes = await client.nodes()
            samples.append(
                {
                    "t_s": round(time.monotonic() - start, 1),
                    "rss_mib": {n["node_id"]: round(n["rss_bytes"] / 2**20, 1) for n in nodes},
                    "subtasks": counts(await client.status(job_id)),
                }
            )
        await client.cancel(job_id)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    context = zmq.Context()
    outside = context.socket(zmq.PULL)
    outside.setsockopt(zmq.RCVHWM, 10)
    outside.setsockopt(zmq.LINGER, 0)
    port = outside.bind_to_random_port("tcp://127.0.0.1")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            job_file = Path(tmp) / "backpressure.py"
            job_file.write_text(textwrap.dedent(JOB.format(endpoint=f"tcp://127.0.0.1:{port}")))
            with LocalCluster(
                nodes=2,
                slots=1,
                state_dir=Path(tmp) / "cluster",
                env={"MESH_HEARTBEAT_INTERVAL": "250ms"},
            ) as cluster:
                samples = anyio.run(sample, cluster.address, job_file, args.seconds)
    finally:
        outside.close()
        context.term()
    first, last = samples[1], samples[-1]
    span = last["t_s"] - first["t_s"]
    fast = (
        last["subtasks"]["fast consumer"]["records_in"]
        - first["subtasks"]["fast consumer"]["records_in"]
    ) / span
    report = {
        "seconds": args.seconds,
        "fast_channel_records_per_s": round(fast),
        "slow_source_records": [s["subtasks"]["slow source"]["records_in"] for s in samples],
        "rss_mib": [s["rss_mib"] for s in samples],
        "rss_growth_mib": {
            node: round(last["rss_mib"][node] - first["rss_mib"][node], 1)
            for node in last["rss_mib"]
        },
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
