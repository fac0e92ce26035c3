"""W2 across hosts: a coordinator and 2 nodes in network namespaces of their own (as in
tests/hosts/), keyless, with CURVE keys, and keyless with 50 ms ± 20 ms of latency (a
delaying proxy in front of every daemon) and 1 % of the packets dropped on every link;
prints JSON. Needs root, ``ip`` and ``nft``.

    sudo python bench/hosts.py --rounds 3

Each round runs the three setups one after the other on fresh clusters, in an order
that rotates, and reports throughput (records over processing time) and the nodes' CPU
time per setup; ratios are against keyless in the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.run import DATA, _count_lines  # noqa: E402
from bench.telemetry import _cpu_s  # noqa: E402
from tests.multihost import HostCluster  # noqa: E402
from tests.netns import network_lab  # noqa: E402

SETUPS = ("keyless", "curve", "keyless_50ms_1pct_loss")
HOSTS = ["coord", "n1", "n2", "client"]


def run_w2(setup: str, events: int) -> dict[str, float]:
    """W2 once on a fresh three-host cluster set up as ``setup`` says."""
    with tempfile.TemporaryDirectory() as tmp, network_lab(HOSTS) as lab:
        work = Path(tmp)
        args = ["--insecure"]
        if setup == "curve":
            keys = work / "keys"
            subprocess.run(
                [sys.executable, "-m", "mesh", "keys", "generate", str(keys)],
                check=True,
                capture_output=True,
            )
            args = ["--keys", str(keys)]
        env = {"MESH_BENCH_DATA": str(DATA), "MESH_BENCH_OUT": str(work / "out")}
        os.environ.update(env)
        cluster = HostCluster(
            lab,
            work,
            coordinator_host="coord",
            extra_args=args,
            client_args=[a for a in args if a != "--insecure"],
            env=env,
            latency=(50, 20) if setup.endswith("loss") else None,
        )
        try:
            cluster.start_coordinator()
            nodes = [cluster.start_node(h, slots=1, wait=False) for h in ("n1", "n2")]
            cluster.wait_ready(nodes)
            if setup.endswith("loss"):
                for host in HOSTS:
                    lab.lose(host, 1)
            pids = [n.process.pid for n in nodes]
            cpu_before = sum(_cpu_s(pid) for pid in pids)
            job = str(ROOT / "bench" / "jobs" / "w2.py")
            job_id = cluster.mesh("client", "submit", job).strip().splitlines()[-1]
            deadline = time.monotonic() + 600
            while True:
                status = cluster.status("client", job_id)
                if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"W2 did not end in 600 s ({setup})")
                time.sleep(0.2)  # polling the job's status over the CLI
            cpu = sum(_cpu_s(pid) for pid in pids) - cpu_before
        finally:
            cluster.close()
    if status["state"] != "FINISHED":
        raise RuntimeError(f"W2 ended {status['state']} ({setup}): {status['error']}")
    seconds = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000
    return {"records_per_s": round(events / seconds), "node_cpu_s": round(cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description="W2 across hosts (JSON on stdout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    if not DATA.exists() or _count_lines(DATA) != args.events:
        generate(DATA, args.events)
    runs: dict[str, list[dict[str, float]]] = {setup: [] for setup in SETUPS}
    for round_ in range(args.rounds):
        order = SETUPS[round_ % 3 :] + SETUPS[: round_ % 3]
        for setup in order:
            runs[setup].append(run_w2(setup, args.events))
    report: dict[str, Any] = {"rounds": args.rounds, "events": args.events}
    for setup in SETUPS:
        report[setup] = {
            "records_per_s": [r["records_per_s"] for r in runs[setup]],
            "node_cpu_s": [r["node_cpu_s"] for r in runs[setup]],
            "median_records_per_s": statistics.median(r["records_per_s"] for r in runs[setup]),
        }
        if setup != "keyless":
            pairs = list(zip(runs["keyless"], runs[setup], strict=True))
            report[setup]["throughput_vs_keyless"] = round(
                statistics.median(b["records_per_s"] / a["records_per_s"] for a, b in pairs), 3
            )
            report[setup]["cpu_vs_keyless"] = round(
                statistics.median(b["node_cpu_s"] / a["node_cpu_s"] for a, b in pairs), 3
            )
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
