"""Keyed state larger than memory: the sequence check with 1,000,000 keys; prints JSON.

    python bench/state_rss.py --keys 1000000 --pad 300
    python bench/state_rss.py --keys 1000000 --backends sqlite --rescale 2,3,1,2 --interval 200ms

Runs tests/jobs/seqcheck.py (every key seen ``--n`` times, its state padded to ``--pad``
bytes) on 2 nodes, once per backend, sampling each node's resident memory. With
``--rescale``, the job is stopped with a savepoint (after a checkpoint completed) and
resumed at each parallelism in turn. Reports the largest RSS next to the size of the
state (the largest completed checkpoint or savepoint, and the sqlite backend's working
databases), and checks the committed output: no alert, every (key, seq) exactly once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mesh.client.client import open_client, prepare_submission  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402

JOB = ROOT / "tests" / "jobs" / "seqcheck.py"


def _working_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("cluster/node-*/**/state/*.db*"))


class _Peaks:
    """The largest node RSS and working-database size seen while sampling."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rss: dict[str, int] = {}
        self.working = 0

    async def sample(self, client: Any) -> None:
        for node in await client.nodes():
            self.rss[node["node_id"]] = max(self.rss.get(node["node_id"], 0), node["rss_bytes"])
        size = await anyio.to_thread.run_sync(_working_bytes, self.root)
        self.working = max(self.working, size)


async def _run(address: str, root: Path, parallelisms: list[int]) -> dict[str, Any]:
    peaks = _Peaks(root)
    history: list[dict[str, Any]] = []
    restore: str | None = None
    started = time.monotonic()
    async with open_client(address, timeout_s=60) as client:
        for step, parallelism in enumerate(parallelisms):
            submission = prepare_submission(
                JOB, base_dir=root, parallelism=parallelism, restore_from=restore
            )
            job_id = await client.submit(submission)
            step_started = time.monotonic()
            last = step == len(parallelisms) - 1
            while True:
                status = await client.status(job_id)
                await peaks.sample(client)
                completed = (status["checkpoints"] or {}).get("completed", 0)
                if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                    break
                # Stop a step after it ran a while (the state grows) and checkpointed.
                if not last and completed >= 1 and time.monotonic() - step_started > 4:
                    restore = await client.savepoint(
                        job_id, directory=str(root / "savepoints"), cancel=True
                    )
                    break
                await anyio.sleep(0.5)
            while status["state"] not in ("FINISHED", "FAILED", "CANCELED"):
                await anyio.sleep(0.2)
                status = await client.status(job_id)
            await peaks.sample(client)
            history.extend(await client.checkpoints(job_id))
            expected = "FINISHED" if last else "CANCELED"
            if status["state"] != expected:
                raise RuntimeError(f"step {step}: {status['state']}: {status['error']}")
    completed = [c for c in history if c["state"] in ("COMPLETED", "DISCARDED")]
    return {
        "parallelisms": parallelisms,
        "seconds": round(time.monotonic() - started, 1),
        "checkpoints": sum(c["kind"] == "checkpoint" for c in completed),
        "savepoints": sum(c["kind"] == "savepoint" for c in completed),
        "largest_checkpoint_bytes": max((c["size_bytes"] for c in completed), default=0),
        "checkpoint_ms_max": max((c["duration_ms"] for c in completed), default=0),
        "peak_working_db_bytes": peaks.working,
        "peak_node_rss_bytes": peaks.rss,
    }


def _check(out: Path, keys: int, n: int) -> dict[str, int]:
    seen: dict[tuple[int, int], int] = {}
    alerts = 0
    for path in out.glob("part-*.jsonl"):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            if "alert" in record:
                alerts += 1
            else:
                key = (record["key"], record["seq"])
                seen[key] = seen.get(key, 0) + 1
    return {
        "alerts": alerts,
        "duplicates": sum(c - 1 for c in seen.values() if c > 1),
        "missing": keys * n - len(seen),
    }


def run(
    backend: str, keys: int, pad: int, n: int, interval: str, parallelisms: list[int]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            "SEQ_KEYS": str(keys),
            "SEQ_N": str(n),
            "SEQ_PAD": str(pad),
            "SEQ_BACKEND": backend,
            "SEQ_INTERVAL": interval,
            "SEQ_OUT": str(root / "out"),
        }
        os.environ.update(env)
        with LocalCluster(
            nodes=2,
            slots=max(1, -(-max(parallelisms) // 2)),
            state_dir=root / "cluster",
            env={"MESH_HEARTBEAT_INTERVAL": "250ms"},
        ) as cluster:
            result = anyio.run(_run, cluster.address, root, parallelisms)
        result["output"] = _check(root / "out", keys, n)
    state = max(result["largest_checkpoint_bytes"], result["peak_working_db_bytes"])
    result["state_mib"] = round(state / 2**20, 1)
    result["peak_rss_mib"] = {
        k: round(v / 2**20, 1) for k, v in result["peak_node_rss_bytes"].items()
    }
    return {"backend": backend, "keys": keys, "pad_bytes": pad, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--pad", type=int, default=300)
    parser.add_argument("--n", type=int, default=2, help="records per key")
    parser.add_argument("--backends", nargs="*", default=["sqlite", "memory"])
    parser.add_argument("--interval", default="2s", help="checkpoint interval")
    parser.add_argument(
        "--rescale", default="2", help="parallelisms in turn, a savepoint between, e.g. 2,3,1,2"
    )
    args = parser.parse_args()
    parallelisms = [int(p) for p in args.rescale.split(",")]
    report = [
        run(b, args.keys, args.pad, args.n, args.interval, parallelisms) for b in args.backends
    ]
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
