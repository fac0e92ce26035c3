"""Keyed state larger than a node's memory lives in the sqlite backend's databases.

The sequence check with 300,000 keys whose state is padded to 1 KiB (about 300 MB of
state over the two nodes, written through several checkpoints): each node's resident
memory stays far below the state it holds, and the output is still exactly once.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, read_parts, status_summary

JOB = Path(__file__).resolve().parents[1] / "jobs" / "seqcheck.py"


def working_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("**/state/*.db"))


@pytest.mark.slow
def test_sqlite_backend_keeps_resident_memory_below_the_state(
    local_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, n = 300_000, 2
    for key, value in {
        "SEQ_KEYS": str(keys),
        "SEQ_N": str(n),
        "SEQ_PAD": "1024",
        "SEQ_BACKEND": "sqlite",
        "SEQ_INTERVAL": "2s",
        "SEQ_OUT": str(tmp_path / "out"),
    }.items():
        monkeypatch.setenv(key, value)
    cluster = local_cluster(nodes=2, slots=1, env={"MESH_HEARTBEAT_INTERVAL": "200ms"})

    async def scenario() -> tuple[dict, int, int, int]:
        peak_rss, peak_state = 0, 0
        async with open_client(cluster.address) as client:
            nodes = await poll_until(  # the nodes' memory before the job: after a heartbeat
                client.nodes,
                until=lambda nodes: all(n["rss_bytes"] for n in nodes),
                timeout_s=30,
                interval_s=0.1,
                what="every node to report its memory",
            )
            idle = max(n["rss_bytes"] for n in nodes)
            job_id = await client.submit(prepare_submission(JOB, base_dir=tmp_path))

            async def sample() -> dict:
                nonlocal peak_rss, peak_state
                status = await client.status(job_id)
                nodes = await client.nodes()
                peak_rss = max([peak_rss, *(n["rss_bytes"] for n in nodes)])
                size = await anyio.to_thread.run_sync(working_bytes, cluster.state_dir)
                peak_state = max(peak_state, size)
                return status

            status = await poll_until(
                sample,
                until=lambda status: status["state"] in ("FINISHED", "FAILED", "CANCELED"),
                timeout_s=180,
                interval_s=0.2,
                what=f"job {job_id} to end",
                show=status_summary,
            )
            return status, idle, peak_rss, peak_state

    status, idle, peak_rss, peak_state = anyio.run(scenario)
    assert status["state"] == "FINISHED", status["error"]
    print(
        f"node RSS idle {idle / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB; "
        f"state on disk {peak_state / 2**20:.0f} MiB"
    )
    assert peak_state > 250 * 2**20  # the state really is big
    # Each node holds half of it; what the job added to a node's memory is a fraction.
    share = peak_state / 2
    assert peak_rss < share * 0.75
    assert peak_rss - idle < share / 3
    records = read_parts(tmp_path / "out")
    assert not [r for r in records if "alert" in r]
    assert len(records) == keys * n
    assert len({(r["key"], r["seq"]) for r in records}) == keys * n
