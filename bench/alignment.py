"""What watermark alignment does to W3's memory: W3 (10 s tumbling windows, count per
user; bench/jobs/w3.py) on 2 nodes, without and with ``align_group`` (``--drift``),
in interleaved rounds; prints JSON.

    python bench/alignment.py               # 3 rounds, drift 30s
    python bench/alignment.py --rounds 5 --drift 10s

The two source subtasks read the two halves of the events file, whose timestamps span
the same range. Without alignment the faster half runs ahead, and every window of its
keys stays open until the slower half's watermark passes it; with alignment the faster
half waits. Per run: each node's peak resident memory (``VmHWM``), the wall time and the
processing throughput; the committed output of every run must equal the first one's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.run import DATA, _count_lines, _run_job  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def _output(directory: Path) -> list[bytes]:
    lines: list[bytes] = []
    for part in directory.glob("part-*.jsonl"):
        lines.extend(line for line in part.read_bytes().splitlines() if line)
    return sorted(lines)


def _one(drift: str | None, work: Path, records: int) -> tuple[dict[str, Any], list[bytes]]:
    """W3 on a fresh 2-node cluster (so the peaks are this run's alone)."""
    out = work / "out"
    os.environ.update({"MESH_BENCH_OUT": str(out), "MESH_BENCH_ALIGN": drift or ""})
    with LocalCluster(nodes=2, slots=1, state_dir=work / "cluster") as cluster:
        status = anyio.run(_run_job, cluster.address, ROOT / "bench" / "jobs" / "w3.py")
        peaks = [_peak_rss(node.pid) for node in cluster.nodes]
    seconds = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000
    run = {
        "peak_rss_mb": [round(p / 2**20, 1) for p in peaks],
        "wall_s": round(status["wall_s"], 2),
        "records_per_s": round(records / seconds),
    }
    return run, _output(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drift", default="30s")
    args = parser.parse_args()
    if not DATA.exists():
        generate(DATA)
    records = _count_lines(DATA)
    runs: dict[str, list[dict[str, Any]]] = {"unaligned": [], "aligned": []}
    reference: list[bytes] | None = None
    for round_ in range(args.rounds):
        order = [("unaligned", None), ("aligned", args.drift)]
        for name, drift in order if round_ % 2 == 0 else order[::-1]:
            with tempfile.TemporaryDirectory(prefix="mesh-bench-align-") as tmp:
                run, output = _one(drift, Path(tmp), records)
            if reference is None:
                reference = output
            elif output != reference:
                raise SystemExit(f"{name} round {round_}: the output differs from the first run")
            runs[name].append(run)

    def summary(name: str) -> dict[str, Any]:
        peaks = [max(r["peak_rss_mb"]) for r in runs[name]]
        return {
            "max_node_peak_rss_mb_median": statistics.median(peaks),
            "records_per_s_median": statistics.median(r["records_per_s"] for r in runs[name]),
            "runs": runs[name],
        }

    result = {
        "benchmark": "watermark alignment, W3 on 2 nodes",
        "drift": args.drift,
        "rounds": args.rounds,
        "records": records,
        "python": platform.python_version(),
        "load_1m": os.getloadavg()[0],
        "unaligned": summary("unaligned"),
        "aligned": summary("aligned"),
        "same_output": True,
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
