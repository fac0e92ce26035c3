"""mesh next to its peers on the same data: a plain Python loop and Bytewax 0.21; prints
JSON.

    python bench/peers.py                          # 3 rounds, 1,000,000 events
    python bench/peers.py --events 20000 --rounds 1
    python bench/peers.py --only w3 --contenders mesh_2n,bytewax_2p

Workloads, over the JSON-lines data set of bench/generate.py (the same file for all):

* ``w1``: filter on a word in ``text``, map to ``{user, value}``;
* ``w2_final``: per-user count and sum of ``value``, one ``{user, count, sum}`` per user
  at the end of input;
* ``w2_stream``: the same, as a running update: one ``{user, count, sum}`` per record;
* ``w3``: 10 s tumbling event-time windows, count per user, watermark = max ts - 2 s:
  ``{key, window_start, window_end, count}``.

Contenders, each a fresh process (or set of processes) per run:

* ``plain``: a per-line Python + orjson loop in one process. Its output is the
  reference every other output is checked against (as multisets of JSON values; for
  ``w2_stream``, the last update per user and the number of updates); a mismatch exits
  non-zero naming the contender and the workload;
* ``bytewax_1w``, ``bytewax_2w``, ``bytewax_2p``: Bytewax 0.21 (``python -m bytewax.run``)
  with 1 worker, 2 worker threads in one process (``-w 2``), and 2 processes of one
  worker each (``-i``/``-a``). Bytewax is installed into its own venv in a per-machine
  cache (``--cache-dir``, default ~/.cache/mesh-bench), never into mesh's;
* ``mesh_1n``, ``mesh_2n``: a LocalCluster of 1 node, or of 2 nodes with one slot each,
  and the job submitted at that parallelism, as ``mesh run`` does it; ``*_batch``: the
  same with ``w2_final`` in batch mode (the other workloads as in streaming mode).

Rounds interleave the contenders (each round runs every contender once per workload, in
an order rotated from round to round, so a machine's drift hits all alike); figures are
medians over rounds:

* ``wall_s``: the whole run as a user waits for it, start-up to exit (subprocess wall);
* ``processing_s``: start-up excluded: for the loop and Bytewax, from the first read of
  the input to the output closed, timed inside the processes; for mesh, from the first
  subtask starting to the last one finishing (job status, as in bench/run.py);
* ``*_vs_plain``: those divided by the plain loop's (above 1 is slower).

Also the wall time of W1 over a 10-event file (what start-up costs each contender) and
the resident memory of each process once started and idle.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.run import DATA, _count_lines  # noqa: E402

WORKLOADS = ("w1", "w2_final", "w2_stream", "w3")
CONTENDERS = (
    "plain",
    "bytewax_1w",
    "bytewax_2w",
    "bytewax_2p",
    "mesh_1n",
    "mesh_2n",
    "mesh_1n_batch",
    "mesh_2n_batch",
)
BYTEWAX_SPEC = "bytewax==0.21.*"
RUN_TIMEOUT_S = 1800

# -- the plain loop: one script per workload ---------------------------------------------

# Every generated script (loop and Bytewax) ends by printing one JSON line on stderr:
# ``first_read`` and ``end`` on CLOCK_MONOTONIC, which all processes of a machine
# share, so the figures of several processes can be combined.
PLAIN_HEAD = """
import json, sys, time
import orjson

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

DATA, OUT = sys.argv[1], sys.argv[2] + "/part-0.jsonl"
NEWLINE = orjson.OPT_APPEND_NEWLINE
loads, dumps = orjson.loads, orjson.dumps
idle = rss_mb()
first_read = time.monotonic()
"""

PLAIN_TAIL = """
end = time.monotonic()
print(json.dumps({"first_read": first_read, "end": end, "idle_rss_mb": idle}), file=sys.stderr)
"""

PLAIN = {
    "w1": """
with open(DATA, "rb") as f, open(OUT, "wb") as o:
    write = o.write
    for line in f:
        e = loads(line)
        if "error" in e["text"]:
            write(dumps({"user": e["user"], "value": e["value"]}, option=NEWLINE))
""",
    "w2_final": """
totals = {}
with open(DATA, "rb") as f:
    for line in f:
        e = loads(line)
        t = totals.get(e["user"])
        if t is None:
            totals[e["user"]] = [1, e["value"]]
        else:
            t[0] += 1
            t[1] += e["value"]
with open(OUT, "wb") as o:
    o.write(b"".join(
        dumps({"user": u, "count": c, "sum": s}, option=NEWLINE) for u, (c, s) in totals.items()
    ))
""",
    "w2_stream": """
totals = {}
with open(DATA, "rb") as f, open(OUT, "wb") as o:
    write = o.write
    for line in f:
        e = loads(line)
        user = e["user"]
        c, s = totals.get(user, (0, 0))
        c, s = c + 1, s + e["value"]
        totals[user] = (c, s)
        write(dumps({"user": user, "count": c, "sum": s}, option=NEWLINE))
""",
    # A window [start, start + SIZE) fires once the watermark (max ts - DELAY - 1, as in
    # mesh) reaches its last ms; starts are multiples of SIZE, so one bound says which.
    "w3": """
SIZE, DELAY = 10_000, 2_000
windows = {}
highest = fired_below = -(2**63)

def fire(o, below):
    for start in sorted(s for s in windows if s < below):
        end = start + SIZE
        o.write(b"".join(
            dumps({"key": u, "window_start": start, "window_end": end, "count": c},
                  option=NEWLINE)
            for u, c in windows.pop(start).items()
        ))

with open(DATA, "rb") as f, open(OUT, "wb") as o:
    for line in f:
        e = loads(line)
        ts = e["ts"]
        start = ts - ts % SIZE
        if start < fired_below:
            continue  # late: its window has fired (mesh drops such records too)
        counts = windows.setdefault(start, {})
        counts[e["user"]] = counts.get(e["user"], 0) + 1
        if ts > highest:
            highest = ts
            watermark = highest - DELAY - 1
            below = (watermark + 1) // SIZE * SIZE - SIZE + 1
            if below > fired_below:
                fire(o, below)
                fired_below = below
    fire(o, 2**63)
""",
}

# -- Bytewax: one flow module per workload -------------------------------------------------

BYTEWAX_HEAD = """
import atexit, json, os, sys, time
from datetime import datetime, timedelta, timezone

import orjson
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

DATA, OUT = os.environ["PEERS_DATA"], os.environ["PEERS_OUT"]
NEWLINE = orjson.OPT_APPEND_NEWLINE
first_reads = []


def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


class _ByteRange(StatelessSourcePartition):
    # Worker i of n reads the lines that start in the i-th n-th of the file, as mesh's
    # JsonLines source splits a file, so that 2 workers share the reading; Bytewax's
    # FileSource reads a file in one partition.
    def __init__(self, index, count):
        size = os.path.getsize(DATA)
        self._file = open(DATA, "rb")
        self._end = size * (index + 1) // count
        start = size * index // count
        if start:
            self._file.seek(start - 1)
            self._file.readline()
        self._pos = self._file.tell()
        self._first = True

    def next_batch(self):
        if self._first:
            first_reads.append(time.monotonic())
            self._first = False
        batch = []
        for line in self._file.readlines(1 << 17):  # about 1,000 lines, FileSource's batch
            if self._pos >= self._end:
                break
            self._pos += len(line)
            batch.append(orjson.loads(line))
        if not batch:
            raise StopIteration
        return batch

    def close(self):
        self._file.close()


class _Nothing(StatelessSourcePartition):
    def next_batch(self):
        raise StopIteration


class JsonLinesSource(DynamicSource):
    # split=False: worker 0 reads the whole file, in order, and the others nothing.
    def __init__(self, split=True):
        self._split = split

    def build(self, step_id, worker_index, worker_count):
        if self._split:
            return _ByteRange(worker_index, worker_count)
        return _ByteRange(0, 1) if worker_index == 0 else _Nothing()


class _PartFile(StatelessSinkPartition):
    def __init__(self, index):
        self._file = open(f"{OUT}/part-{index}.jsonl", "wb")

    def write_batch(self, items):
        self._file.write(b"".join([orjson.dumps(i, option=NEWLINE) for i in items]))

    def close(self):
        self._file.close()


class JsonLinesSink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return _PartFile(worker_index)


idle = rss_mb()


@atexit.register
def _report():
    first = min(first_reads) if first_reads else None
    report = {"first_read": first, "end": time.monotonic(), "idle_rss_mb": idle}
    print(json.dumps(report), file=sys.stderr)


flow = Dataflow("peers")
"""

BYTEWAX_FLOWS = {
    "w1": """
events = op.input("read", flow, JsonLinesSource())
kept = op.filter("error", events, lambda e: "error" in e["text"])
rows = op.map("pick", kept, lambda e: {"user": e["user"], "value": e["value"]})
op.output("write", rows, JsonLinesSink())
""",
    "w2_final": """
events = op.input("read", flow, JsonLinesSource())

def add(acc, e):
    acc[0] += 1
    acc[1] += e["value"]
    return acc

keyed = op.key_on("user", events, lambda e: e["user"])
totals = op.fold_final("totals", keyed, lambda: [0, 0], add)
rows = op.map("row", totals, lambda kv: {"user": kv[0], "count": kv[1][0], "sum": kv[1][1]})
op.output("write", rows, JsonLinesSink())
""",
    "w2_stream": """
events = op.input("read", flow, JsonLinesSource())

def running(state, e):
    count, total = state or (0, 0)
    state = (count + 1, total + e["value"])
    return state, {"user": e["user"], "count": state[0], "sum": state[1]}

keyed = op.key_on("user", events, lambda e: e["user"])
updates = op.stateful_map("running", keyed, running)
op.output("write", op.map("row", updates, lambda kv: kv[1]), JsonLinesSink())
""",
    # EventClock's watermark is max ts - wait plus the system time since that max was
    # seen; a frozen now_getter drops the second term, leaving max ts - 2 s as in mesh
    # and the loop, and to_system_utc=None: no wake-ups, a file never idles.
    # One worker reads: each key's clock advances with whatever items reach it, with no
    # minimum over input partitions, so a file split across readers would push the
    # watermark past the earlier part's windows and drop those records as late.
    "w3": """
import bytewax.operators.windowing as win

events = op.input("read", flow, JsonLinesSource(split=False))

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SIZE = 10_000

clock = win.EventClock(
    lambda e: EPOCH + timedelta(milliseconds=e["ts"]),
    wait_for_system_duration=timedelta(seconds=2),
    now_getter=lambda: EPOCH,
    to_system_utc=lambda _ts: None,
)
windower = win.TumblingWindower(length=timedelta(milliseconds=SIZE), align_to=EPOCH)
counts = win.count_window("count", events, clock, windower, lambda e: e["user"])

def row(item):
    user, (window_id, count) = item
    start = window_id * SIZE  # windows are aligned to EPOCH: window k starts at k * SIZE
    return {"key": user, "window_start": start, "window_end": start + SIZE, "count": count}

op.output("write", op.map("row", counts.down, row), JsonLinesSink())
""",
}

# -- mesh: job files and the driver ---------------------------------------------------------

# W1 and W3 are bench/run.py's jobs; the W2 variants here count as well as sum.
MESH_JOBS = {
    "w1": ROOT / "bench" / "jobs" / "w1.py",
    "w3": ROOT / "bench" / "jobs" / "w3.py",
}

MESH_W2_HEAD = """
import os

from mesh import Aggregate, Job, sinks, sources

DATA = os.environ["MESH_BENCH_DATA"]
OUT = os.environ["MESH_BENCH_OUT"]

job = Job("peers", parallelism=1)
events = job.source(sources.JsonLines(DATA))
"""

MESH_W2 = {
    # Each user's totals once, at the end of input (in batch mode the sources combine
    # before the keyed exchange).
    "w2_final": """
class CountSum(Aggregate):
    def create(self):
        return [0, 0]

    def add(self, acc, e):
        acc[0] += 1
        acc[1] += e["value"]
        return acc

    def merge(self, a, b):
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc):
        return {"count": acc[0], "sum": acc[1]}


(
    events.key_by(lambda e: e["user"])
    .aggregate(CountSum(), emit="final")
    .map(lambda r: {"user": r["key"], **r["value"]})
    .sink(sinks.JsonLines(OUT))
)
""",
    "w2_stream": """
def add(a, b):
    return {"user": a["user"], "count": a["count"] + b["count"], "sum": a["sum"] + b["sum"]}


(
    events.map(lambda e: {"user": e["user"], "count": 1, "sum": e["value"]})
    .key_by(lambda e: e["user"])
    .reduce(add)
    .sink(sinks.JsonLines(OUT))
)
""",
}

# Runs in a fresh interpreter, as ``mesh run`` would: cluster up, submit, wait, down.
MESH_DRIVER = """
import json, sys
from pathlib import Path

from mesh.client.launcher import early_launcher, start_early_launcher
start_early_launcher()  # as mesh run does: the daemons are forked from it, imported
import anyio
from mesh.client.client import open_client, prepare_submission
from mesh.client.local_cluster import LocalCluster

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def run(address, job_file, parallelism, base, mode):
    async with open_client(address) as client:
        submission = prepare_submission(
            job_file, parallelism=parallelism, base_dir=base, mode=mode
        )
        job_id = await client.submit(submission)
        return await client.await_end(job_id)

job_file, nodes, state, base = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
mode = sys.argv[5]
with LocalCluster(nodes=nodes, slots=1, state_dir=state, launcher=early_launcher()) as cluster:
    idle = {"coordinator": rss_mb(cluster.coordinator.pid)}
    idle.update({f"node-{i}": rss_mb(n.pid) for i, n in enumerate(cluster.nodes)})
    status = anyio.run(run, cluster.address, job_file, nodes, base, mode)
if status["state"] != "FINISHED":
    sys.exit(f"job ended {status['state']}: {status.get('error')}")
seconds = (status["processing_finished_ms"] - status["processing_started_ms"]) / 1000
print(json.dumps({"processing_s": seconds, "idle_rss_mb": idle}), file=sys.stderr)
"""


# -- running one contender ---------------------------------------------------------------------


@dataclass
class Run:
    """One contender's run of one workload: its timings, and each process's idle RSS."""

    wall_s: float
    processing_s: float
    idle_rss_mb: dict[str, float]


@dataclass
class Bench:
    """What every run needs: the generated scripts' directory, Bytewax's interpreter and
    the output directory (emptied before each run)."""

    work: Path
    bytewax_python: Path
    out: Path


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(proc: subprocess.Popen[bytes], what: str) -> dict[str, Any]:
    """The JSON report a process printed last on stderr; SystemExit if it failed."""
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SystemExit(f"{what} did not finish within {RUN_TIMEOUT_S} s") from None
    text = err.decode(errors="replace")
    lines = text.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{text[-3000:]}")
    report: dict[str, Any] = orjson.loads(lines[-1])
    return report


def _timed(
    argvs: list[list[str]], what: str, env: dict[str, str] | None = None
) -> tuple[float, list[dict[str, Any]]]:
    """Run processes side by side; the wall time until the last exits, and their reports."""
    started = time.perf_counter()
    procs = [_start(argv, env) for argv in argvs]
    reports = [_finish(proc, what) for proc in procs]
    return time.perf_counter() - started, reports


def _from_reports(wall: float, reports: list[dict[str, Any]]) -> Run:
    """Processing time across processes: the first read anywhere to the last exit."""
    first = min(r["first_read"] for r in reports if r["first_read"] is not None)
    end = max(r["end"] for r in reports)
    idle = {f"process-{i}": r["idle_rss_mb"] for i, r in enumerate(reports)}
    return Run(wall_s=wall, processing_s=end - first, idle_rss_mb=idle)


def run_plain(bench: Bench, workload: str, data: Path) -> Run:
    script = bench.work / f"plain_{workload}.py"
    wall, reports = _timed(
        [[sys.executable, str(script), str(data), str(bench.out)]], f"plain {workload}"
    )
    return _from_reports(wall, reports)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_bytewax(bench: Bench, workload: str, data: Path, workers: int, processes: int) -> Run:
    base = [str(bench.bytewax_python), "-m", "bytewax.run", f"bytewax_{workload}:flow"]
    if processes == 1:
        argvs = [[*base, "-w", str(workers)]]
    else:
        addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(processes))
        argvs = [[*base, "-i", str(i), "-a", addresses] for i in range(processes)]
    # The flow modules are generated into bench.work: PYTHONPATH lets bytewax.run find them.
    env = {"PEERS_DATA": str(data), "PEERS_OUT": str(bench.out), "PYTHONPATH": str(bench.work)}
    wall, reports = _timed(argvs, f"bytewax ({workers}w x {processes}p) {workload}", env)
    return _from_reports(wall, reports)


def run_mesh(bench: Bench, workload: str, data: Path, nodes: int, mode: str) -> Run:
    job = MESH_JOBS.get(workload, bench.work / f"mesh_{workload}.py")
    state = bench.work / "cluster"
    shutil.rmtree(state, ignore_errors=True)
    argv = [sys.executable, "-c", MESH_DRIVER, str(job), str(nodes), str(state), str(ROOT), mode]
    # The job file reads these at import, in the driver and on every node alike.
    env = {"MESH_BENCH_DATA": str(data), "MESH_BENCH_OUT": str(bench.out)}
    wall, (report,) = _timed([argv], f"mesh ({nodes} nodes, {mode}) {workload}", env)
    return Run(wall_s=wall, processing_s=report["processing_s"], idle_rss_mb=report["idle_rss_mb"])


RUNNERS: dict[str, Callable[[Bench, str, Path], Run]] = {
    "plain": run_plain,
    "bytewax_1w": lambda b, w, d: run_bytewax(b, w, d, workers=1, processes=1),
    "bytewax_2w": lambda b, w, d: run_bytewax(b, w, d, workers=2, processes=1),
    "bytewax_2p": lambda b, w, d: run_bytewax(b, w, d, workers=1, processes=2),
    "mesh_1n": lambda b, w, d: run_mesh(b, w, d, nodes=1, mode="streaming"),
    "mesh_2n": lambda b, w, d: run_mesh(b, w, d, nodes=2, mode="streaming"),
    # Batch mode fits only the final totals: the others are streaming answers.
    "mesh_1n_batch": lambda b, w, d: run_mesh(
        b, w, d, nodes=1, mode="batch" if w == "w2_final" else "streaming"
    ),
    "mesh_2n_batch": lambda b, w, d: run_mesh(
        b, w, d, nodes=2, mode="batch" if w == "w2_final" else "streaming"
    ),
}


def write_scripts(work: Path) -> None:
    """The loop scripts, Bytewax flow modules and mesh W2 jobs, into ``work``."""
    for workload in WORKLOADS:
        (work / f"plain_{workload}.py").write_text(PLAIN_HEAD + PLAIN[workload] + PLAIN_TAIL)
        (work / f"bytewax_{workload}.py").write_text(BYTEWAX_HEAD + BYTEWAX_FLOWS[workload])
    for workload, body in MESH_W2.items():
        (work / f"mesh_{workload}.py").write_text(MESH_W2_HEAD + body)


# -- Bytewax's venv ---------------------------------------------------------------------------


def _bytewax_version(python: Path) -> str | None:
    """The Bytewax version ``python`` imports (with orjson), or None if it cannot."""
    if not python.exists():
        return None
    probe = "import importlib.metadata as m, bytewax, orjson; print(m.version('bytewax'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_bytewax(cache: Path) -> tuple[Path, str]:
    """A venv with Bytewax 0.21 under ``cache``, made on first use and reused after."""
    venv = cache / "bytewax-0.21"
    python = venv / "bin" / "python"
    version = _bytewax_version(python)
    if version is None or not version.startswith("0.21."):
        print(f"installing {BYTEWAX_SPEC} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        # The loop's orjson version, so that parsing costs the same on both sides.
        packages = [BYTEWAX_SPEC, f"orjson=={orjson.__version__}"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        version = _bytewax_version(python)
        if version is None:
            raise SystemExit(f"{BYTEWAX_SPEC} did not install into {venv}")
    return python, version


# -- checking outputs -------------------------------------------------------------------------


def _output_lines(out: Path) -> list[bytes]:
    return [line for p in sorted(out.glob("part-*.jsonl")) for line in p.read_bytes().splitlines()]


def normalize(workload: str, out: Path) -> Any:
    """What must match the reference: a multiset of JSON values, or for ``w2_stream``
    the last update of each user (the one with the highest count) and the update count."""
    lines = _output_lines(out)
    if workload != "w2_stream":
        return collections.Counter(
            orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) for line in lines
        )
    last: dict[str, tuple[int, int]] = {}
    for line in lines:
        r = orjson.loads(line)
        if r["count"] > last.get(r["user"], (0, 0))[0]:
            last[r["user"]] = (r["count"], r["sum"])
    return {"updates": len(lines), "last": last}


def _difference(expected: Any, got: Any) -> str:
    if isinstance(expected, collections.Counter):
        missing, extra = expected - got, got - expected
        return (
            f"{got.total()} records, expected {expected.total()}; "
            f"missing e.g. {list(missing)[:3]}, unexpected e.g. {list(extra)[:3]}"
        )
    wrong = [
        u
        for u in expected["last"].keys() | got["last"].keys()
        if expected["last"].get(u) != got["last"].get(u)
    ]
    return (
        f"{got['updates']} updates, expected {expected['updates']}; "
        f"{len(wrong)} users end differently, e.g. "
        f"{[(u, got['last'].get(u), expected['last'].get(u)) for u in wrong[:3]]}"
    )


def check(workload: str, contender: str, expected: Any, got: Any) -> None:
    if got != expected:
        raise SystemExit(
            f"{contender} gave wrong output for {workload}: {_difference(expected, got)}"
        )


# -- rounds and the report --------------------------------------------------------------------


def run_round(
    bench: Bench, contenders: list[str], workloads: list[str], data: Path, rotate: int
) -> dict[str, dict[str, Run]]:
    """Each workload once per contender, in an order rotated by ``rotate``; outputs checked
    against the plain loop's."""
    order = contenders[rotate % len(contenders) :] + contenders[: rotate % len(contenders)]
    runs: dict[str, dict[str, Run]] = {}
    for workload in workloads:
        runs[workload], outputs = {}, {}
        for contender in order:
            shutil.rmtree(bench.out, ignore_errors=True)
            bench.out.mkdir()
            run = runs[workload][contender] = RUNNERS[contender](bench, workload, data)
            outputs[contender] = normalize(workload, bench.out)
            print(
                f"  {workload} {contender}: wall {run.wall_s:.2f} s, "
                f"processing {run.processing_s:.2f} s",
                file=sys.stderr,
            )
        for contender, got in outputs.items():
            check(workload, contender, outputs["plain"], got)
    return runs


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(rounds: list[dict[str, dict[str, Run]]], events: int) -> dict[str, Any]:
    """Per workload and contender: medians, the runs, and the ratios to the plain loop."""
    report: dict[str, Any] = {}
    for workload in rounds[0]:
        per: dict[str, Any] = {}
        for contender in rounds[0][workload]:
            runs = [r[workload][contender] for r in rounds]
            processing = [r.processing_s for r in runs]
            per[contender] = {
                "wall_s": _median([r.wall_s for r in runs]),
                "processing_s": _median(processing),
                "records_per_s": round(events / statistics.median(processing)),
                "wall_runs": [round(r.wall_s, 3) for r in runs],
                "processing_runs": [round(p, 3) for p in processing],
            }
        plain = per["plain"]
        for figures in per.values():
            figures["wall_vs_plain"] = round(figures["wall_s"] / plain["wall_s"], 2)
            figures["processing_vs_plain"] = round(
                figures["processing_s"] / plain["processing_s"], 2
            )
        report[workload] = per
    return report


def idle_rss(rounds: list[dict[str, dict[str, Run]]]) -> dict[str, dict[str, float]]:
    """Each contender's processes' resident memory once started, median over its runs."""
    samples: dict[str, dict[str, list[float]]] = {}
    for r in rounds:
        for by_contender in r.values():
            for contender, run in by_contender.items():
                for process, mb in run.idle_rss_mb.items():
                    samples.setdefault(contender, {}).setdefault(process, []).append(mb)
    return {
        contender: {process: round(statistics.median(v), 1) for process, v in procs.items()}
        for contender, procs in samples.items()
    }


def _names(text: str, allowed: tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma-separated")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="plain always runs (the reference)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mesh-bench",
    )
    args = parser.parse_args()
    workloads = _names(args.only, WORKLOADS)
    contenders = ["plain", *(c for c in _names(args.contenders, CONTENDERS) if c != "plain")]

    if not DATA.exists() or _count_lines(DATA) != args.events:
        generate(DATA, args.events)
    bytewax_python, bytewax_version = ensure_bytewax(args.cache_dir)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mesh-bench-peers-") as tmp:
        work = Path(tmp)
        write_scripts(work)
        tiny = work / "ten.jsonl"
        generate(tiny, 10)
        bench = Bench(work=work, bytewax_python=bytewax_python, out=work / "out")
        rounds, tiny_rounds = [], []
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr)
            rounds.append(run_round(bench, contenders, workloads, DATA, round_))
            # W1 over 10 events: what starting up costs each contender.
            tiny_rounds.append(run_round(bench, contenders, ["w1"], tiny, round_))

    ten = {c: _median([r["w1"][c].wall_s for r in tiny_rounds]) for c in contenders}
    report = {
        "benchmark": "peers",
        "rounds": args.rounds,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "dataset": {"path": str(DATA), "events": args.events, "bytes": DATA.stat().st_size},
        "bytewax": {"version": bytewax_version, "python": str(bytewax_python)},
        "outputs_checked": "every run against the plain loop's, same round",
        "workloads": summarize(rounds, args.events),
        "ten_event_job_wall_s": ten,
        "ten_event_job_wall_vs_plain": {c: round(s / ten["plain"], 2) for c, s in ten.items()},
        "idle_rss_mb": idle_rss(rounds),
        "unsupported": {},
        "notes": {
            "mesh idle_rss_mb": "the coordinator and nodes once ready (the driving client aside)",
            "mesh w2_final": "key_by(user).aggregate(CountSum(), emit='final'); in "
            "mesh_*_batch, the job in batch mode (sources combine before the shuffle)",
            "bytewax input": "a DynamicSource reading byte ranges of the file, one per "
            "worker (FileSource has one partition per file)",
            "bytewax w3": "the file is read by one worker (the windows are still spread "
            "over all workers by key): Bytewax's event clock is per key and takes no "
            "minimum over input partitions, so with the file split across workers, "
            "records of the earlier part arrive after the later part moved their key's "
            "watermark past their window and are dropped as late (wrong counts)",
        },
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
