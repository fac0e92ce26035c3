"""mesh benchmarks W1 and W2 next to a plain Python loop, plus W1 latency; prints JSON.

    python bench/run.py                 # everything (generates the data set if missing)
    python bench/run.py --only w1 --repeat 5

W1 = filter on a word in ``text`` + map to {user, value}, chained, one node.
W2 = key_by(user) + running sum of ``value`` across 2 nodes (hash shuffle over ZeroMQ).
W3 = 10 s tumbling event-time windows, count per user, watermark = max ts - 2 s, 2 nodes.
Both read the 1,000,000-event JSON-lines data set and write JSON lines (a JsonLines
sink in mesh, a file in the loops). The plain loops do the same per-record work in one
process: ``naive`` reads line by line; ``batched`` reads chunks and uses comprehensions
like mesh's chains do — the interpreter's ceiling.

mesh figures are processing throughput: records divided by the time from the first
subtask starting to the last one finishing (deploy excluded; ``wall_s`` includes it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from mesh.client.client import open_client, prepare_submission  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402

DATA = ROOT / "bench" / "data" / "events.jsonl"
RESULTS = ROOT / "bench" / "results"
NEWLINE = orjson.OPT_APPEND_NEWLINE


# -- plain loops ---------------------------------------------------------------------------


def loop_w1_naive(data: Path, out: Path) -> int:
    loads, dumps = orjson.loads, orjson.dumps
    n = 0
    with open(data, "rb") as f, open(out, "wb") as o:
        write = o.write
        for line in f:
            e = loads(line)
            n += 1
            if "error" in e["text"]:
                write(dumps({"user": e["user"], "value": e["value"]}, option=NEWLINE))
    return n


def _chunks(data: Path, size: int = 1 << 20) -> Any:
    with open(data, "rb") as f:
        rest = b""
        while chunk := f.read(size):
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            rest = chunk[cut:]
            yield chunk[:cut].split(b"\n")[:-1]
        if rest:
            yield [rest]


def loop_w1_batched(data: Path, out: Path) -> int:
    loads, dumps = orjson.loads, orjson.dumps
    n = 0
    with open(out, "wb") as o:
        for lines in _chunks(data):
            for i in range(0, len(lines), 1024):
                batch = [loads(line) for line in lines[i : i + 1024]]
                n += len(batch)
                kept = [e for e in batch if "error" in e["text"]]
                mapped = [{"user": e["user"], "value": e["value"]} for e in kept]
                o.write(b"".join([dumps(r, option=NEWLINE) for r in mapped]))
    return n


def loop_w2_naive(data: Path, out: Path) -> int:
    loads, dumps = orjson.loads, orjson.dumps
    sums: dict[str, int] = {}
    n = 0
    with open(data, "rb") as f, open(out, "wb") as o:
        write = o.write
        for line in f:
            e = loads(line)
            n += 1
            user = e["user"]
            total = sums.get(user, 0) + e["value"]
            sums[user] = total
            write(dumps({**e, "value": total}, option=NEWLINE))
    return n


def loop_w2_batched(data: Path, out: Path) -> int:
    loads, dumps = orjson.loads, orjson.dumps
    sums: dict[str, int] = {}
    n = 0
    with open(out, "wb") as o:
        for lines in _chunks(data):
            for i in range(0, len(lines), 1024):
                batch = [loads(line) for line in lines[i : i + 1024]]
                n += len(batch)
                result = []
                for e in batch:
                    user = e["user"]
                    total = sums.get(user, 0) + e["value"]
                    sums[user] = total
                    result.append({**e, "value": total})
                o.write(b"".join([dumps(r, option=NEWLINE) for r in result]))
    return n


def loop_w3_batched(data: Path, out: Path) -> int:
    """10 s tumbling windows, count per user, event time with watermark = max ts - 2 s:
    windows fire (and are written) as the watermark passes their end."""
    loads, dumps = orjson.loads, orjson.dumps
    size, delay = 10_000, 2_000
    windows: dict[int, dict[str, int]] = {}
    highest = -(2**63)
    n = 0
    with open(out, "wb") as o:

        def fire(upto: int) -> None:
            for start in sorted(s for s in windows if s + size - 1 <= upto):
                counts = windows.pop(start)
                o.write(
                    b"".join(
                        dumps(
                            {
                                "key": u,
                                "window_start": start,
                                "window_end": start + size,
                                "count": c,
                            },
                            option=NEWLINE,
                        )
                        for u, c in counts.items()
                    )
                )

        for lines in _chunks(data):
            for i in range(0, len(lines), 1024):
                batch = [loads(line) for line in lines[i : i + 1024]]
                n += len(batch)
                for e in batch:
                    ts = e["ts"]
                    start = ts - ts % size
                    counts = windows.get(start)
                    if counts is None:
                        counts = windows[start] = {}
                    user = e["user"]
                    counts[user] = counts.get(user, 0) + 1
                    if ts > highest:
                        highest = ts
                fire(highest - delay - 1)
        fire(2**63 - 1)
    return n


def time_loop(fn: Any, data: Path, repeat: int) -> dict[str, Any]:
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            start = time.perf_counter()
            n = fn(data, Path(tmp) / "out.jsonl")
            rates.append(n / (time.perf_counter() - start))
    return {"records_per_s": round(statistics.median(rates)), "runs": [round(r) for r in rates]}


# -- mesh runs -----------------------------------------------------------------------------


async def _run_job(address: str, job_file: Path, keys: Path | None = None) -> dict[str, Any]:
    async with open_client(address, keys=keys) as client:
        start = time.perf_counter()
        job_id = await client.submit(prepare_submission(job_file, base_dir=ROOT))
        while True:
            status = await client.status(job_id)
            if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                break
            await anyio.sleep(0.02)
        status["wall_s"] = time.perf_counter() - start
    if status["state"] != "FINISHED":
        raise RuntimeError(f"{job_file.name} ended {status['state']}: {status['error']}")
    return dict(status)


def run_mesh(job: str, nodes: int, repeat: int, env: dict[str, str]) -> list[dict[str, Any]]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        # The job file reads these at import, on the client and on every node alike.
        os.environ.update({**env, "MESH_BENCH_OUT": str(out)})
        with LocalCluster(nodes=nodes, slots=1, state_dir=Path(tmp) / "cluster") as cluster:
            for _ in range(repeat):
                shutil.rmtree(out, ignore_errors=True)
                status = anyio.run(_run_job, cluster.address, ROOT / "bench" / "jobs" / job)
                runs.append(status)
    return runs


def summarize(runs: list[dict[str, Any]], records: int) -> dict[str, Any]:
    rates = []
    for st in runs:
        seconds = (st["processing_finished_ms"] - st["processing_started_ms"]) / 1000
        rates.append(records / seconds)
    return {
        "records_per_s": round(statistics.median(rates)),
        "runs": [round(r) for r in rates],
        "wall_s": [round(st["wall_s"], 3) for st in runs],
    }


def latency(hop: bool, rate: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        env = {
            "MESH_BENCH_RATE": str(rate),
            "MESH_BENCH_SECONDS": str(seconds),
            "MESH_BENCH_HOP": "1" if hop else "0",
            "MESH_BENCH_OUT": str(out),
        }
        os.environ.update(env)
        with LocalCluster(nodes=2, slots=2, state_dir=Path(tmp) / "cluster") as cluster:
            status = anyio.run(_run_job, cluster.address, ROOT / "bench" / "jobs" / "latency.py")
        lat = sorted(
            orjson.loads(line)["lat_ms"]
            for path in out.glob("part-*.jsonl")
            for line in path.read_bytes().splitlines()
        )
    seconds_run = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

    return {
        "network_hop": hop,
        "buffer_timeout": "5ms",
        "target_rate": rate,
        "achieved_rate": round(rate * seconds / seconds_run),
        "samples": len(lat),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 2),
    }


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main() -> None:
    parser = argparse.ArgumentParser(description="mesh benchmarks (JSON on stdout)")
    parser.add_argument("--only", choices=["w1", "w2", "w3", "latency"], action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--latency-rate", type=float, default=None)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    args = parser.parse_args()
    only = set(args.only or ["w1", "w2", "w3", "latency"])
    if not DATA.exists() or _count_lines(DATA) != args.events:
        generate(DATA, args.events)
    env = {"MESH_BENCH_DATA": str(DATA)}
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "dataset": {"path": str(DATA), "events": args.events, "bytes": DATA.stat().st_size},
    }
    if "w1" in only or "latency" in only:
        naive = time_loop(loop_w1_naive, DATA, args.repeat)
        batched = time_loop(loop_w1_batched, DATA, args.repeat)
        mesh = summarize(run_mesh("w1.py", 1, args.repeat, env), args.events)
        ceiling = max(naive["records_per_s"], batched["records_per_s"])
        report["w1"] = {
            "mesh": mesh,
            "plain_loop_naive": naive,
            "plain_loop_batched": batched,
            "mesh_vs_best_loop": round(mesh["records_per_s"] / ceiling, 3),
            "target": ">= 1,000,000 records/s and >= 50% of the plain loop",
        }
    if "w2" in only:
        naive = time_loop(loop_w2_naive, DATA, args.repeat)
        batched = time_loop(loop_w2_batched, DATA, args.repeat)
        mesh = summarize(run_mesh("w2.py", 2, args.repeat, env), args.events)
        report["w2"] = {
            "mesh_2_nodes": mesh,
            "plain_loop_naive": naive,
            "plain_loop_batched": batched,
            "target": ">= 500,000 records/s on 2 nodes",
        }
    if "w3" in only:
        batched = time_loop(loop_w3_batched, DATA, args.repeat)
        mesh = summarize(run_mesh("w3.py", 2, args.repeat, env), args.events)
        report["w3"] = {
            "mesh_2_nodes": mesh,
            "plain_loop_batched": batched,
            "mesh_vs_loop": round(mesh["records_per_s"] / batched["records_per_s"], 3),
            "target": ">= 400,000 records/s on 2 nodes",
        }
    if "latency" in only:
        peak = report.get("w1", {}).get("mesh", {}).get("records_per_s", 2_000_000)
        rate = args.latency_rate or round(peak * 0.1, -3)
        report["latency_w1"] = latency(False, rate, args.latency_seconds)
        report["latency_w1_network_hop"] = latency(True, rate, args.latency_seconds)
        report["latency_target"] = "p99 <= 20 ms at ~10% of W1's peak rate, buffer_timeout 5ms"
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    (RESULTS / "latest.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
