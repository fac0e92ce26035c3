"""What telemetry costs: W1 (1 node) and W2 (2 nodes) with telemetry off and on; JSON.

    python bench/telemetry.py                  # 5 rounds of W1 and W2
    python bench/telemetry.py --rounds 7 --only w2
    python bench/telemetry.py --together       # off and on at the same time

*Off* is a cluster started with no telemetry settings. *On* is the same cluster with
every daemon exporting over OTLP/HTTP to a receiver in this process (a real HTTP server
decoding the requests with opentelemetry-proto), serving Prometheus text that a scraper
thread reads every second, and the job tracing 0.001 of its records
(``--trace-sample``). Each round runs off and on back to back, alternating which goes
first, so a machine's drift hits both alike; with ``--together`` they run at the same
time instead, each on its own cluster sharing the machine, which cancels drift within a
round too (throughput is then shared and only the CPU figure means much). Two figures
per workload:

* ``cpu_overhead``: the median per-round ratio of the CPU time (user + system) the node
  processes spent on the job, minus one — what telemetry costs in work, which other
  processes on a busy machine barely disturb;
* ``throughput_overhead``: one minus the median per-round ratio of throughput (records
  over processing time, first subtask started to last finished, as in
  ``bench/run.py``) — what a user sees, but as noisy as the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.run import DATA, _count_lines  # noqa: E402
from mesh.client.client import open_client, prepare_submission  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402
from tests.otlp import OtlpReceiver, otlp_receiver  # noqa: E402

WORKLOADS = {"w1": ("w1.py", 1), "w2": ("w2.py", 2)}
TRACE_SAMPLE = 0.001


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _scraping(ports: list[int], every_s: float = 1.0) -> Iterator[list[int]]:
    """Scrape each port's /metrics every ``every_s`` until the block ends; yields the
    count of successful scrapes (filled in as they happen)."""
    done: list[int] = [0]
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(every_s):
            for port in ports:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5):
                        done[0] += 1
                except OSError:
                    pass

    thread = threading.Thread(target=scrape, name="scraper", daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(timeout=10)


async def _run_job(address: str, job_file: Path, trace_sample: float | None) -> dict[str, Any]:
    submission = prepare_submission(job_file, base_dir=ROOT, trace_sample=trace_sample)
    async with open_client(address) as client:
        job_id = await client.submit(submission)
        while True:
            status = await client.status(job_id)
            if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                break
            await anyio.sleep(0.02)
    if status["state"] != "FINISHED":
        raise RuntimeError(f"{job_file.name} ended {status['state']}: {status['error']}")
    return dict(status)


def run_once(
    workload: str,
    events: int,
    receiver: OtlpReceiver | None,
    start: threading.Barrier | None = None,
) -> dict[str, Any]:
    """One run of ``workload`` on a fresh cluster; telemetry on when given a receiver.
    With ``start``, the job is submitted once every party's cluster is up."""
    job, nodes = WORKLOADS[workload]
    with tempfile.TemporaryDirectory() as tmp:
        args: list[str] = []
        ports: list[int] = []
        if receiver is not None:
            args = ["--otlp-endpoint", receiver.endpoint]
            ports = [_free_port() for _ in range(nodes + 1)]
        cluster = LocalCluster(
            nodes=1,
            slots=1,
            state_dir=Path(tmp) / "cluster",
            coordinator_args=[*args, *(["--metrics-port", str(ports[0])] if ports else [])],
            node_args=args,
            env={"MESH_METRICS_PORT": str(ports[1])} if ports else None,
        )
        with cluster:
            for n in range(1, nodes):
                cluster.add_node(env={"MESH_METRICS_PORT": str(ports[n + 1])} if ports else None)
            spans_before = len(receiver.snapshot()) if receiver is not None else 0
            pids = [node.pid for node in cluster.nodes]
            if start is not None:
                start.wait(timeout=120)
            cpu_before = sum(_cpu_s(pid) for pid in pids)
            with _scraping(ports) as scrapes:
                status = anyio.run(
                    _run_job,
                    cluster.address,
                    ROOT / "bench" / "jobs" / job,
                    TRACE_SAMPLE if receiver is not None else None,
                )
            cpu = sum(_cpu_s(pid) for pid in pids) - cpu_before
        # The daemons flushed their spans when they stopped.
        spans = len(receiver.snapshot()) - spans_before if receiver is not None else 0
    seconds = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000
    return {
        "records_per_s": round(events / seconds),
        "node_cpu_s": round(cpu, 3),
        "spans": spans,
        "scrapes": scrapes[0],
    }


def _together(
    workload: str, events: int, receiver: OtlpReceiver
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run with telemetry off and one with it on, at the same time."""
    start = threading.Barrier(2)
    results: dict[bool, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def one(telemetry: OtlpReceiver | None) -> None:
        try:
            results[telemetry is not None] = run_once(workload, events, telemetry, start)
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=one, args=(t,)) for t in (None, receiver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results[False], results[True]


def span_costs(receiver: OtlpReceiver, n: int = 2000) -> dict[str, float]:
    """Microseconds of CPU per record span, made as a subtask makes them (in this
    process, exporting to ``receiver``): start, context for the frame, end; and the
    export, measured while the batch processor sends them (receiver's decoding
    included)."""
    from opentelemetry import trace

    from mesh.telemetry.setup import install_tracing
    from mesh.telemetry.tracing import carrier_of, end_span, linked_span, tracer

    telemetry = install_tracing("mesh-bench", "bench", receiver.endpoint)
    spans_tracer = tracer("mesh.bench")
    attributes = {"mesh.job.id": "bench", "mesh.task": "task", "mesh.subtask.index": 0}
    started = time.process_time()
    spans = [linked_span(spans_tracer, "task", (), attributes) for _ in range(n)]
    made = time.process_time()
    for span in spans:
        carrier_of(span)
    carried = time.process_time()
    for span in spans:
        end_span(span)
    ended = time.process_time()
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    exported = time.process_time()
    telemetry.shutdown()
    return {
        "start_us": round((made - started) / n * 1e6, 1),
        "context_us": round((carried - made) / n * 1e6, 1),
        "end_us": round((ended - carried) / n * 1e6, 1),
        "export_us": round((exported - ended) / n * 1e6, 1),
    }


def plain_loop_s() -> float:
    """A fixed amount of plain Python work, to compare machines and moments."""
    start = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i % 7
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description="telemetry overhead (JSON on stdout)")
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--together", action="store_true", help="run off and on at once")
    args = parser.parse_args()
    if not DATA.exists() or _count_lines(DATA) != args.events:
        generate(DATA, args.events)
    # Both clusters of a round may run at once: they share one output directory (their
    # part files are named after their job ids), read at import by client and nodes.
    out = tempfile.mkdtemp(prefix="mesh-bench-telemetry-")
    os.environ.update({"MESH_BENCH_DATA": str(DATA), "MESH_BENCH_OUT": out})
    report: dict[str, Any] = {
        "mode": "together" if args.together else "one after the other",
        "trace_sample": TRACE_SAMPLE,
        "rounds": args.rounds,
        "plain_loop_s_before": plain_loop_s(),
    }
    with otlp_receiver() as receiver:
        for workload in args.only or sorted(WORKLOADS):
            off: list[dict[str, Any]] = []
            on: list[dict[str, Any]] = []
            for round_ in range(args.rounds):
                if args.together:
                    a, b = _together(workload, args.events, receiver)
                    off.append(a)
                    on.append(b)
                    continue
                order = [None, receiver] if round_ % 2 == 0 else [receiver, None]
                for telemetry in order:
                    result = run_once(workload, args.events, telemetry)
                    (on if telemetry is not None else off).append(result)
            pairs = list(zip(off, on, strict=True))
            rates = [b["records_per_s"] / a["records_per_s"] for a, b in pairs]
            cpus = [b["node_cpu_s"] / a["node_cpu_s"] for a, b in pairs]
            report[workload] = {
                "off_records_per_s": [r["records_per_s"] for r in off],
                "on_records_per_s": [r["records_per_s"] for r in on],
                "off_node_cpu_s": [r["node_cpu_s"] for r in off],
                "on_node_cpu_s": [r["node_cpu_s"] for r in on],
                "cpu_on_over_off_per_round": [round(r, 3) for r in cpus],
                "cpu_overhead": round(statistics.median(cpus) - 1, 4),
                "throughput_on_over_off_per_round": [round(r, 3) for r in rates],
                "throughput_overhead": round(1 - statistics.median(rates), 4),
                "spans_per_on_run": [r["spans"] for r in on],
                "scrapes_per_on_run": [r["scrapes"] for r in on],
                "target": "overhead <= 0.03",
            }
        report["otlp_bad_requests"] = receiver.bad_requests
        # Last: it installs a tracer provider in this process.
        report["span_costs"] = span_costs(receiver)
    shutil.rmtree(out, ignore_errors=True)
    report["plain_loop_s_after"] = plain_loop_s()
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
