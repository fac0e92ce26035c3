"""What CURVE costs: W2 (key_by + running sum, a hash shuffle across 2 nodes) on a
keyless cluster and on one with ``--keys``; prints JSON.

    python bench/curve.py                 # 5 rounds
    python bench/curve.py --rounds 7 --events 500000

Both clusters run side by side for the whole benchmark; each round runs the job on
each, back to back, alternating which goes first, so a machine's drift hits both alike.
Two figures:

* ``throughput_overhead``: one minus the median per-round ratio of throughput (records
  over processing time, first subtask started to last finished, as in
  ``bench/run.py``);
* ``cpu_overhead``: the median per-round ratio of the CPU time (user + system) the node
  processes spent on the job, minus one — the work encryption adds, which other
  processes on a busy machine barely disturb.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.run import DATA, _count_lines, _run_job  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402
from mesh.transport.keys import DEFAULT_NAMES, generate_keys  # noqa: E402


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one(cluster: LocalCluster, out: Path, keys: Path | None) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    before = sum(_cpu_s(n.pid) for n in cluster.nodes)
    status = anyio.run(_job, cluster.address, keys)
    cpu = sum(_cpu_s(n.pid) for n in cluster.nodes) - before
    seconds = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000
    return {"seconds": seconds, "cpu_s": cpu}


async def _job(address: str, keys: Path | None) -> dict[str, Any]:
    return await _run_job(address, ROOT / "bench" / "jobs" / "w2.py", keys=keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    if not DATA.exists() or _count_lines(DATA) != args.events:
        generate(DATA, args.events)
    os.environ["MESH_BENCH_DATA"] = str(DATA)
    records = args.events
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        base = Path(tmp)
        keys = base / "keys"
        generate_keys(keys, DEFAULT_NAMES)
        out = base / "out"
        os.environ["MESH_BENCH_OUT"] = str(out)  # read by the job file, here and on nodes
        clusters = {
            "off": LocalCluster(nodes=2, slots=1, state_dir=base / "off"),
            "on": LocalCluster(
                nodes=2,
                slots=1,
                state_dir=base / "on",
                coordinator_args=["--keys", str(keys)],
                node_args=["--keys", str(keys)],
            ),
        }
        for cluster in clusters.values():
            stack.enter_context(cluster)
        for round_ in range(args.rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for which in order:
                result = _one(clusters[which], out, keys if which == "on" else None)
                runs[which].append(result)
    speed = [
        (records / on["seconds"]) / (records / off["seconds"])
        for off, on in zip(runs["off"], runs["on"], strict=True)
    ]
    cpu = [on["cpu_s"] / off["cpu_s"] for off, on in zip(runs["off"], runs["on"], strict=True)]
    report = {
        "workload": "w2 (2 nodes, 1 slot each)",
        "records": records,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "records_per_s": {
            which: round(statistics.median(records / r["seconds"] for r in rs))
            for which, rs in runs.items()
        },
        "node_cpu_s": {
            which: round(statistics.median(r["cpu_s"] for r in rs), 2) for which, rs in runs.items()
        },
        "throughput_overhead": round(1 - statistics.median(speed), 3),
        "cpu_overhead": round(statistics.median(cpu) - 1, 3),
        "runs": {
            which: [
                {"records_per_s": round(records / r["seconds"]), "cpu_s": round(r["cpu_s"], 2)}
                for r in rs
            ]
            for which, rs in runs.items()
        },
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
