"""Does the dashboard slow the coordinator? W2 with the page open and refreshing vs
closed, and the page's responsiveness at 200 subtasks; prints JSON.

    python bench/dashboard.py                          # 5 rounds, 3,000,000 events
    python bench/dashboard.py --rounds 3 --events 1000000
    python bench/dashboard.py --skip-wide              # part 1 only

Part 1, W2 throughput: bench/peers.py's ``w2_stream`` job (per-user running count and
sum, a hash shuffle between 2 nodes of one slot each) over the first ``--events`` lines
of bench/data/events.jsonl, read round and round when that file is shorter (W2 has no
event time, so the repeat changes nothing but the counts). Each run is a fresh
LocalCluster; rounds interleave the variants in an order rotated from round to round:

* ``no_http``: the coordinator without ``--http`` (the baseline before the dashboard);
* ``closed``: ``--http 127.0.0.1:0``, nobody connected;
* ``poll``: the same, and a plain Python HTTP client (one keep-alive connection, in this
  process) fetching what the page fetches on a job's graph tab with a task's panel
  open, as often: the graph and the task's subtasks every second, the job and its
  metrics every 2 s, the overview every 3 s (each period counted from the previous
  answer, as the page's loops do). The coordinator's share of the dashboard's cost,
  without a browser competing for the CPU;
* ``open``: the same with a real page: headless Chromium (Debian's, through
  Playwright) shows the jobs list before the job is submitted, switches to the job's
  graph tab (``#/jobs/<id>/graph``) as soon as the submission returns, and clicks the
  first task (``g[data-task]``) to open its subtasks panel; it stays open, refreshing,
  until the job has ended.
* ``plain`` (the machine reference): bench/peers.py's plain Python loop of W2 over the
  same file, in one process.

Throughput is events over the processing time (the first subtask starting to the last
one finishing, from the job's status, as in bench/peers.py); medians over rounds, and
ratios per round (``open`` over ``closed`` of the same round) with their median. The
machine has few cores and Chromium needs CPU too, so every run also reports the CPU time
(utime + stime from /proc, within the processing window) of the coordinator, the nodes,
Chromium's processes, Playwright's driver and this process (the poll client): a slower
``open`` with a busy Chromium and an idle coordinator is contention, not the coordinator.
Every run's output is checked: one update per event.

Part 2, responsiveness at 200 subtasks: a job of two tasks of parallelism 100
(``Generator -> Map``, hash, ``Sum -> Sink``) on 2 nodes of 50 slots (slot sharing:
100 slots), an unbounded Generator at ``--wide-rate`` records/s in all, so it mostly
idles. Measured once it runs:

* the API's latency (median, p95, max over ``--requests`` sequential requests, each on
  a new connection) of ``/graph``, ``/tasks/<widest>/subtasks``, ``/nodes``,
  ``/jobs/<id>``, ``/metrics`` and ``/health``, and the answers' sizes; then ``/health``
  and ``/graph`` back to back on one keep-alive connection (where a server that leaves
  Nagle's algorithm on shows ~40 ms delayed-ACK stalls);
* in Chromium: navigation to the graph drawn (every task's ``g[data-task]`` present),
  a click on the 100-subtask task to its panel showing 100 ``tr[data-subtask]`` rows
  (both in-page, from ``performance.now()``, medians over ``--page-repeats``); then
  ``--window`` seconds of refreshing with the panel open: the page's long tasks
  (PerformanceObserver ``longtask``: main-thread work of 50 ms or more), its timer lag
  (a 100 ms interval's delay), how long its /graph and /subtasks fetches took as the
  page saw them (Resource Timing), and the CPU used by Chromium and the coordinator;
* the coordinator's loop lag: ``/api/v1/health`` latency, probed every 100 ms (each on a
  new connection) through a ``--window`` with no page open, then through the window
  with the page refreshing.

Everything started (clusters, Chromium, Playwright's driver) stops in ``finally``
blocks; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import itertools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from bench.peers import MESH_W2, MESH_W2_HEAD, PLAIN, PLAIN_HEAD, PLAIN_TAIL  # noqa: E402
from bench.run import DATA  # noqa: E402
from mesh.client.client import open_client, prepare_submission  # noqa: E402
from mesh.client.local_cluster import LocalCluster  # noqa: E402

VARIANTS = ("no_http", "closed", "poll", "open")
HTTP_ARGS = ["--http", "127.0.0.1:0"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
RUN_TIMEOUT_S = 600
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What the page fetches on a job's graph tab with a task panel open, and every how
# many seconds (mesh/coordinator/web/static/dashboard.js: the header's overview loop,
# the job page's head and metrics loops, the graph tab's loop and the panel's loop).
PAGE_POLLS = (
    ("overview", 3.0),
    ("jobs/{job}", 2.0),
    ("jobs/{job}/metrics", 2.0),
    ("jobs/{job}/graph", 1.0),
    ("jobs/{job}/tasks/{task}/subtasks", 1.0),
)

WIDE_JOB = """
from mesh import Job, sinks, sources

job = Job("wide", parallelism={parallelism})
(
    job.source(sources.Generator(lambda i: {{"user": i % 1000, "n": i}}, rate={rate}))
    .map(lambda e: {{**e, "double": e["n"] * 2}})
    .key_by(lambda e: e["user"])
    .sum("n")
    .sink(sinks.JsonLines({out!r}))
)
"""

# Installed in every page before its scripts run: long tasks and timer lag, kept on
# window.__bench with performance.now() times.
PAGE_PROBES = """
window.__bench = { longtasks: [], lags: [], longtaskSupported: false };
performance.setResourceTimingBufferSize(100000);
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__bench.longtasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
  window.__bench.longtaskSupported = true;
} catch (e) { window.__bench.longtaskError = String(e); }
(() => {
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    window.__bench.lags.push([now, now - last - 100]);
    last = now;
  }, 100);
})();
"""

# Resolves with [ms from the click to `n` subtask rows drawn, ms at the click].
PANEL_WATCH = """
(n) => {
  window.__panel = new Promise((resolve) => {
    document.addEventListener("click", () => {
      const clicked = performance.now();
      const check = () => {
        if (document.querySelectorAll("tr[data-subtask]").length === n) {
          resolve([performance.now() - clicked, clicked]);
        } else {
          requestAnimationFrame(check);
        }
      };
      check();
    }, { capture: true, once: true });
  });
}
"""

# The page's own view of a window [start, end] of performance.now() time.
PAGE_WINDOW = """
([start, end]) => {
  const b = window.__bench;
  const longtasks = b.longtasks.filter(([t]) => t >= start && t <= end).map(([, d]) => d);
  const lags = b.lags.filter(([t]) => t >= start && t <= end).map(([, d]) => d);
  const fetches = performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= start && e.startTime <= end && e.name.includes("/api/v1/"))
    .map((e) => [new URL(e.name).pathname, e.duration]);
  return { longtasks, lags, fetches, longtaskSupported: b.longtaskSupported,
           domNodes: document.getElementsByTagName("*").length };
}
"""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _spread(values: list[float]) -> dict[str, Any]:
    """Median, p95 and max of ``values`` (ms), and how many."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "max": round(ordered[-1], 2),
    }


# -- CPU time from /proc -------------------------------------------------------------------


def _proc_stats() -> dict[int, tuple[int, str, float]]:
    """Every process's parent, command name and CPU seconds (user + system)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is the state (stat's 3rd field): ppid is the 4th, utime the 14th.
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        stats[int(entry.name)] = (int(fields[1]), comm, cpu)
    return stats


def _descendants(stats: dict[int, tuple[int, str, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


Sample = tuple[float, dict[int, tuple[str, float]]]


class CpuSampler:
    """Samples the CPU seconds of this process and its descendants (the daemons,
    Playwright's driver, Chromium) every ``interval_s`` on a thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        # (time.time(), {pid: (command name, CPU seconds)})
        self.samples: list[Sample] = []
        self._lock = threading.Lock()

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        stats = _proc_stats()
        me = os.getpid()
        mine = _descendants(stats, me) | {me}
        taken = {pid: (stats[pid][1], stats[pid][2]) for pid in mine if pid in stats}
        with self._lock:
            self.samples.append((time.time(), taken))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def reset(self) -> None:
        with self._lock:
            self.samples = []

    def _at(self, pid: int, t: float, samples: list[Sample]) -> float:
        """``pid``'s CPU seconds at ``t``, linear between the samples around it (0 before
        it was first seen)."""
        points = [(st, taken[pid][1]) for st, taken in samples if pid in taken]
        if not points or t <= points[0][0]:
            return 0.0 if not points or points[0][0] > samples[0][0] else points[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(points):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return points[-1][1]

    def window(
        self, start: float, end: float, groups: Callable[[int, str], str | None]
    ) -> dict[str, float]:
        """CPU seconds used within [start, end] (time.time()), summed per group;
        ``groups(pid, comm)`` names a process's group (None: not counted)."""
        with self._lock:
            samples = list(self.samples)
        if not samples:
            return {}
        names = {}
        for _, taken in samples:
            for pid, (comm, _) in taken.items():
                names[pid] = comm
        used: dict[str, float] = {}
        for pid, comm in names.items():
            group = groups(pid, comm)
            if group is None:
                continue
            spent = self._at(pid, end, samples) - self._at(pid, start, samples)
            used[group] = used.get(group, 0.0) + max(0.0, spent)
        return {g: round(s, 3) for g, s in sorted(used.items())}


def _grouper(cluster: LocalCluster | None) -> Callable[[int, str], str | None]:
    coordinator = cluster.coordinator.pid if cluster and cluster.coordinator else None
    nodes = {n.pid for n in cluster.nodes} if cluster else set()
    me = os.getpid()

    def group(pid: int, comm: str) -> str | None:
        if pid == coordinator:
            return "coordinator"
        if pid in nodes:
            return "nodes"
        if pid == me:
            return "bench_process"
        if comm.startswith("chrom"):
            return "chromium"
        if comm == "node":
            return "playwright_driver"
        return None

    return group


# -- a plain HTTP client: the poll variant, latencies, health probes ----------------------


class Http:
    """GETs on one keep-alive connection (reconnecting when the server closed it), or
    with ``keep_alive=False`` each on a new connection (its set-up timed too)."""

    def __init__(self, base: str, *, keep_alive: bool = True) -> None:
        parts = urlsplit(base)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._keep_alive = keep_alive
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[float, int, bytes]:
        """(seconds, status, body) of one GET of ``path``."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
            started = time.perf_counter()
            try:
                self._conn.request("GET", path, headers={"Accept": "application/json"})
                reply = self._conn.getresponse()
                body = reply.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue
            seconds = time.perf_counter() - started
            if not self._keep_alive:
                self.close()
            return seconds, reply.status, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Poller:
    """On a thread: fetch each of ``polls`` (path, period in s) again ``period`` after its
    previous answer, until stopped; keeps (time.time(), path, seconds, status)."""

    def __init__(self, base: str, polls: list[tuple[str, float]]) -> None:
        self._http = Http(base)
        self._polls = polls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self.requests: list[tuple[float, str, float, int]] = []

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._http.close()

    def _run(self) -> None:
        due = {path: time.monotonic() for path, _ in self._polls}
        periods = dict(self._polls)
        while not self._stop.is_set():
            path = min(due, key=due.__getitem__)
            if self._stop.wait(max(0.0, due[path] - time.monotonic())):
                return
            at = time.time()
            try:
                seconds, status, _ = self._http.get(path)
            except OSError:
                seconds, status = 0.0, 0
            self.requests.append((at, path, seconds, status))
            due[path] = time.monotonic() + periods[path]


def _page_polls(job_id: str, task: int) -> list[tuple[str, float]]:
    return [
        ("/api/v1/" + path.format(job=job_id, task=task), period) for path, period in PAGE_POLLS
    ]


def _first_task(base: str, job_id: str) -> int:
    """The id of the job graph's first task (the one the page's click opens)."""
    client = Http(base)
    try:
        _, status, body = client.get(f"/api/v1/jobs/{job_id}/graph")
    finally:
        client.close()
    if status != 200:
        raise SystemExit(f"GET /graph answered {status}: {body[:300]!r}")
    return int(orjson.loads(body)["tasks"][0]["id"])


def _latencies(base: str, path: str, count: int, *, keep_alive: bool = False) -> dict[str, Any]:
    """``count`` GETs of ``path`` one after the other: ms (median, p95, max) and size."""
    client = Http(base, keep_alive=keep_alive)
    try:
        client.get(path)  # the first answer's one-off costs paid
        times, size = [], 0
        for _ in range(count):
            seconds, status, body = client.get(path)
            if status != 200:
                raise SystemExit(f"GET {path} answered {status}: {body[:300]!r}")
            times.append(seconds * 1000)
            size = len(body)
    finally:
        client.close()
    return {"ms": _spread(times), "bytes": size}


class HealthProbe:
    """On a thread: GET /api/v1/health every ``interval_s``, each on a new connection;
    the latencies (ms)."""

    def __init__(self, base: str, interval_s: float = 0.1) -> None:
        self._http = Http(base, keep_alive=False)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self.ms: list[float] = []

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._http.close()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            seconds, _, _ = self._http.get("/api/v1/health")
            self.ms.append(seconds * 1000)


# -- clusters and Chromium -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _cluster(state: Path, **kwargs: Any) -> AsyncIterator[LocalCluster]:
    """A LocalCluster started and stopped off the event loop (Playwright shares it)."""
    shutil.rmtree(state, ignore_errors=True)
    cluster = LocalCluster(state_dir=state, **kwargs)
    try:
        await anyio.to_thread.run_sync(cluster.start)
        yield cluster
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cluster.stop)


@dataclass
class Browser:
    """Playwright's Chromium, launched once for the whole benchmark."""

    browser: Any
    version: str
    contexts: list[Any] = field(default_factory=list)

    async def page(self) -> Any:
        context = await self.browser.new_context(viewport={"width": 1400, "height": 900})
        self.contexts.append(context)
        await context.add_init_script(PAGE_PROBES)
        return await context.new_page()

    async def close_pages(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                await context.close()
        self.contexts = []


@contextlib.asynccontextmanager
async def _chromium() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        holder = Browser(browser, browser.version)
        try:
            yield holder
        finally:
            with anyio.CancelScope(shield=True):
                await holder.close_pages()
                await browser.close()


# -- part 1: W2 with the page open, polled, closed, or not served ------------------------


@dataclass
class Setup:
    work: Path
    data: Path
    events: int
    job_file: Path
    sampler: CpuSampler
    browser: Browser | None


def _count_updates(out: Path) -> int:
    total = 0
    for part in out.glob("part-*.jsonl"):
        with open(part, "rb") as f:
            while chunk := f.read(1 << 22):
                total += chunk.count(b"\n")
    return total


async def _open_page(browser: Browser, base: str) -> Any:
    """A page showing the jobs list (loaded, polling), ready to switch to a job."""
    page = await browser.page()
    await page.goto(base + "/#/jobs", wait_until="load")
    await page.wait_for_selector('[data-page="jobs"]')
    return page


async def _show_job(page: Any, job_id: str) -> dict[str, float]:
    """Switch the page to the job's graph tab and open the first task's panel; when
    each step was done (time.time() ms)."""
    await page.evaluate("(hash) => { location.hash = hash; }", f"#/jobs/{job_id}/graph")
    switched = time.time() * 1000
    await page.wait_for_selector("g[data-task]", timeout=60_000)
    drawn = time.time() * 1000
    await page.click("g[data-task]")
    await page.wait_for_selector("tr[data-subtask]", timeout=60_000)
    return {"switched_ms": switched, "graph_drawn_ms": drawn, "panel_rows_ms": time.time() * 1000}


async def w2_mesh(setup: Setup, variant: str) -> dict[str, Any]:
    """One W2 run on a fresh 2-node cluster in ``variant``'s conditions."""
    out = setup.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    os.environ.update({"MESH_BENCH_DATA": str(setup.data), "MESH_BENCH_OUT": str(out)})
    submission = prepare_submission(setup.job_file, parallelism=2, base_dir=ROOT)
    args = [] if variant == "no_http" else HTTP_ARGS
    page, page_requests, poller = None, [], None
    result: dict[str, Any] = {}
    async with _cluster(setup.work / "cluster", nodes=2, slots=1, coordinator_args=args) as cluster:
        base = cluster.http_url
        if variant != "no_http" and not base:
            raise SystemExit("the coordinator did not say where it serves HTTP")
        try:
            if variant == "open":
                assert setup.browser is not None and base is not None
                page = await _open_page(setup.browser, base)
                page.on("request", lambda r: page_requests.append((time.time(), r.url)))
            async with open_client(cluster.address) as client:
                with contextlib.ExitStack() as stack:
                    job_id = await client.submit(submission)
                    if variant == "poll":
                        assert base is not None
                        task = _first_task(base, job_id)
                        poller = stack.enter_context(Poller(base, _page_polls(job_id, task)))
                    if page is not None:
                        result["page"] = await _show_job(page, job_id)
                    with anyio.fail_after(RUN_TIMEOUT_S):
                        status = await client.await_end(job_id)
                    setup.sampler.sample()
                    ended = time.time()
            if status["state"] != "FINISHED":
                raise SystemExit(f"W2 ({variant}) ended {status['state']}: {status.get('error')}")
            start_ms, end_ms = status["processing_started_ms"], status["processing_finished_ms"]
            seconds = (end_ms - start_ms) / 1000
            result.update(
                processing_s=seconds,
                records_per_s=setup.events / seconds,
                wall_after_submit_s=ended - start_ms / 1000,
                cpu_s=setup.sampler.window(start_ms / 1000, end_ms / 1000, _grouper(cluster)),
            )
            window = (start_ms / 1000, end_ms / 1000)
            if poller is not None:
                sent = [r for r in poller.requests if window[0] <= r[0] <= window[1]]
                result["client_requests_in_window"] = len(sent)
                result["client_request_ms"] = _spread([r[2] * 1000 for r in sent])
                result["client_errors"] = sum(1 for r in sent if r[3] != 200)
            if page is not None:
                seen = [u for t, u in page_requests if window[0] <= t <= window[1]]
                result["page_requests_in_window"] = len(seen)
                result["page_graph_requests_in_window"] = sum(u.endswith("/graph") for u in seen)
                result["page_subtasks_requests_in_window"] = sum(
                    u.endswith("/subtasks") for u in seen
                )
                marks = result["page"]
                result["page"] = {
                    "graph_drawn_after_processing_start_ms": round(
                        marks["graph_drawn_ms"] - start_ms
                    ),
                    "panel_open_after_processing_start_ms": round(
                        marks["panel_rows_ms"] - start_ms
                    ),
                }
        finally:
            if page is not None:
                assert setup.browser is not None
                await setup.browser.close_pages()
    updates = _count_updates(out)
    if updates != setup.events:
        raise SystemExit(f"W2 ({variant}) wrote {updates} updates, expected {setup.events}")
    return result


def w2_plain(setup: Setup) -> dict[str, Any]:
    """bench/peers.py's plain loop of W2 over the same file."""
    out = setup.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    script = setup.work / "plain_w2_stream.py"
    done = subprocess.run(
        [sys.executable, str(script), str(setup.data), str(out)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the plain loop failed:\n{done.stderr[-3000:]}")
    report = orjson.loads(lines[-1])
    seconds = report["end"] - report["first_read"]
    updates = _count_updates(out)
    if updates != setup.events:
        raise SystemExit(f"the plain loop wrote {updates} updates, expected {setup.events}")
    return {"processing_s": seconds, "records_per_s": setup.events / seconds}


def _prepare_data(path: Path, events: int) -> None:
    """The first ``events`` lines of bench/data/events.jsonl, round and round."""
    if not DATA.exists():
        _log(f"generating {DATA} ...")
        generate(DATA, 1_000_000)
    source = DATA.read_bytes()
    lines = source.count(b"\n")
    with open(path, "wb") as f:
        left = events
        while left >= lines:
            f.write(source)
            left -= lines
        if left:
            cut = 0
            for _ in range(left):
                cut = source.index(b"\n", cut) + 1
            f.write(source[:cut])


def _python_pass(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _summarize_w2(runs: dict[str, list[dict[str, Any]]], events: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for variant, rs in runs.items():
        processing = [r["processing_s"] for r in rs]
        per: dict[str, Any] = {
            "records_per_s": round(events / statistics.median(processing)),
            "processing_s": round(statistics.median(processing), 3),
            "records_per_s_runs": [round(r["records_per_s"]) for r in rs],
            "load_1m_at_start_runs": [r["load_1m"] for r in rs],
        }
        if variant != "plain":
            per["cpu_s_in_processing_window_median"] = {
                group: round(statistics.median(r["cpu_s"].get(group, 0.0) for r in rs), 3)
                for group in sorted({g for r in rs for g in r["cpu_s"]})
            }
            per["cpu_cores_in_processing_window_median"] = {
                group: round(
                    statistics.median(r["cpu_s"].get(group, 0.0) / r["processing_s"] for r in rs),
                    3,
                )
                for group in per["cpu_s_in_processing_window_median"]
            }
            per["cpu_s_runs"] = [r["cpu_s"] for r in rs]
        for key in (
            "page",
            "page_requests_in_window",
            "page_graph_requests_in_window",
            "page_subtasks_requests_in_window",
            "client_requests_in_window",
            "client_request_ms",
            "client_errors",
        ):
            if key in rs[0]:
                per[key + "_runs"] = [r[key] for r in rs]
        figures[variant] = per
    return figures


def _ratios(runs: dict[str, list[dict[str, Any]]], a: str, b: str) -> dict[str, Any] | None:
    """Throughput of ``a`` over ``b``, per round (same round) and its median."""
    if a not in runs or b not in runs:
        return None
    per_round = [
        x["records_per_s"] / y["records_per_s"] for x, y in zip(runs[a], runs[b], strict=True)
    ]
    return {
        "median": round(statistics.median(per_round), 3),
        "rounds": [round(r, 3) for r in per_round],
    }


# -- part 2: 200 subtasks --------------------------------------------------------------------


async def _wait_all_running(base: str, job_id: str, subtasks: int) -> dict[str, Any]:
    client = Http(base)
    try:
        with anyio.fail_after(120):
            while True:
                _, status, body = await anyio.to_thread.run_sync(
                    client.get, f"/api/v1/jobs/{job_id}/graph"
                )
                graph = orjson.loads(body) if status == 200 else None
                if graph is not None:
                    running = sum(t["states"].get("RUNNING", 0) for t in graph["tasks"])
                    if running == subtasks:
                        return dict(graph)
                await anyio.sleep(0.2)
    finally:
        client.close()


async def wide(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """The 200-subtask job: API latencies, the page's timings, loop lag."""
    p = args.wide_parallelism
    slots = (p + 1) // 2
    job_file = setup.work / "wide_job.py"
    job_file.write_text(
        WIDE_JOB.format(parallelism=p, rate=args.wide_rate, out=str(setup.work / "wide-out"))
    )
    submission = prepare_submission(job_file, base_dir=setup.work)
    result: dict[str, Any] = {
        "job": f"Generator(rate={args.wide_rate}) -> Map, hash, Sum -> Sink JsonLines; "
        f"parallelism {p}",
        "cluster": {"nodes": 2, "slots_per_node": slots},
    }
    async with _cluster(
        setup.work / "wide-cluster", nodes=2, slots=slots, coordinator_args=HTTP_ARGS
    ) as cluster:
        base = cluster.http_url
        assert base is not None
        async with open_client(cluster.address) as client:
            job_id = await client.submit(submission)
            graph = await _wait_all_running(base, job_id, 2 * p)
            await anyio.sleep(2)  # rates and a first metrics point
            tasks = graph["tasks"]
            widest = max(tasks, key=lambda t: t["parallelism"])
            result.update(
                tasks=len(tasks),
                subtasks=sum(t["parallelism"] for t in tasks),
                widest_task={
                    "id": widest["id"],
                    "name": widest["name"],
                    "p": widest["parallelism"],
                },
            )
            _log(f"  {result['subtasks']} subtasks running; API latencies ...")
            paths = {
                "graph": f"/api/v1/jobs/{job_id}/graph",
                "subtasks_widest": f"/api/v1/jobs/{job_id}/tasks/{widest['id']}/subtasks",
                "nodes": "/api/v1/nodes",
                "job": f"/api/v1/jobs/{job_id}",
                "metrics": f"/api/v1/jobs/{job_id}/metrics",
                "health": "/api/v1/health",
            }
            result["api_latency"] = {
                name: await anyio.to_thread.run_sync(_latencies, base, path, args.requests)
                for name, path in paths.items()
            }
            # The same on one keep-alive connection, back to back (as a script would).
            result["api_latency_keep_alive"] = {
                name: await anyio.to_thread.run_sync(
                    functools.partial(_latencies, base, paths[name], args.requests, keep_alive=True)
                )
                for name in ("health", "graph")
            }

            _log(f"  loop lag with no page, {args.window:g} s ...")
            grouper = _grouper(cluster)
            setup.sampler.sample()
            started = time.time()
            with HealthProbe(base) as probe:
                await anyio.sleep(args.window)
            setup.sampler.sample()
            closed_cpu = setup.sampler.window(started, time.time(), grouper)
            closed_health = probe.ms

            if setup.browser is None:
                result["browser"] = "skipped (--skip-browser)"
                result["loop_lag_health_ms"] = {"page_closed": _spread(closed_health)}
                result["cpu_cores_page_closed"] = {
                    g: round(s / args.window, 3) for g, s in closed_cpu.items()
                }
            else:
                result.update(
                    await _wide_page(
                        setup, args, base, job_id, result, grouper, closed_health, closed_cpu
                    )
                )
            await client.cancel(job_id)
    return result


async def _wide_page(
    setup: Setup,
    args: argparse.Namespace,
    base: str,
    job_id: str,
    shape: dict[str, Any],
    grouper: Callable[[int, str], str | None],
    closed_health: list[float],
    closed_cpu: dict[str, float],
) -> dict[str, Any]:
    assert setup.browser is not None
    tasks, widest = shape["tasks"], shape["widest_task"]
    url = f"{base}/#/jobs/{job_id}/graph"
    to_graph, to_graph_wall, to_panel = [], [], []
    try:
        for i in range(args.page_repeats):
            _log(f"  page {i + 1} of {args.page_repeats}: navigation and panel ...")
            page = await setup.browser.page()
            started = time.perf_counter()
            await page.goto(url, wait_until="commit")
            drawn = await page.wait_for_function(
                "(n) => document.querySelectorAll('g[data-task]').length === n"
                " && performance.now()",
                arg=tasks,
                timeout=60_000,
            )
            to_graph_wall.append((time.perf_counter() - started) * 1000)
            to_graph.append(await drawn.json_value())
            await page.evaluate(PANEL_WATCH, widest["p"])
            await page.click(f'g[data-task="{widest["id"]}"]')
            opened, _ = await page.evaluate("window.__panel")
            to_panel.append(opened)
            if i + 1 < args.page_repeats:
                await setup.browser.close_pages()

        # The last page stays on the graph tab with the panel open: a window of it.
        _log(f"  {args.window:g} s with the page refreshing ...")
        rows = await page.evaluate("document.querySelectorAll('tr[data-subtask]').length")
        setup.sampler.sample()
        started_wall = time.time()
        start_page = await page.evaluate("performance.now()")
        with HealthProbe(base) as probe:
            await anyio.sleep(args.window)
        end_page = await page.evaluate("performance.now()")
        setup.sampler.sample()
        open_cpu = setup.sampler.window(started_wall, time.time(), grouper)
        seen = await page.evaluate(PAGE_WINDOW, [start_page, end_page])
        rows_after = await page.evaluate("document.querySelectorAll('tr[data-subtask]').length")
    finally:
        await setup.browser.close_pages()
    window_s = (end_page - start_page) / 1000
    fetches: dict[str, list[float]] = {}
    for path, ms in seen["fetches"]:
        last = path.rstrip("/").rsplit("/", 1)[-1]
        kind = last if last in ("graph", "subtasks", "metrics", "overview") else "job"
        fetches.setdefault(kind, []).append(ms)
    return {
        "page": {
            "navigation_to_graph_drawn_ms": {
                "in_page_median": round(statistics.median(to_graph), 1),
                "in_page_runs": [round(v, 1) for v in to_graph],
                "wall_from_goto_median": round(statistics.median(to_graph_wall), 1),
            },
            "click_to_panel_rows_ms": {
                "median": round(statistics.median(to_panel), 1),
                "runs": [round(v, 1) for v in to_panel],
                "rows": widest["p"],
            },
            "refreshing_window": {
                "seconds": round(window_s, 2),
                "panel_rows": [rows, rows_after],
                "longtask_supported": seen["longtaskSupported"],
                "longtasks": {
                    "count": len(seen["longtasks"]),
                    "total_ms": round(sum(seen["longtasks"]), 1),
                    "max_ms": round(max(seen["longtasks"], default=0.0), 1),
                },
                "timer_lag_ms": _spread(seen["lags"]),
                "fetch_ms_as_page_saw_them": {k: _spread(v) for k, v in sorted(fetches.items())},
                "dom_elements": seen["domNodes"],
            },
        },
        "loop_lag_health_ms": {
            "page_closed": _spread(closed_health),
            "page_refreshing": _spread(probe.ms),
        },
        "cpu_cores": {
            "page_closed": {g: round(s / args.window, 3) for g, s in closed_cpu.items()},
            "page_refreshing": {g: round(s / window_s, 3) for g, s in open_cpu.items()},
        },
    }


# -- main ---------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return names


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    variants = _names(args.variants)
    data = work / "events.jsonl"
    await anyio.to_thread.run_sync(_prepare_data, data, args.events)
    job_file = work / "mesh_w2_stream.py"
    job_file.write_text(MESH_W2_HEAD + MESH_W2["w2_stream"])
    (work / "plain_w2_stream.py").write_text(PLAIN_HEAD + PLAIN["w2_stream"] + PLAIN_TAIL)
    needs_browser = not args.skip_browser and ("open" in variants or not args.skip_wide)
    report: dict[str, Any] = {}
    with CpuSampler() as sampler:
        async with contextlib.AsyncExitStack() as stack:
            browser = await stack.enter_async_context(_chromium()) if needs_browser else None
            if browser is None:
                variants = [v for v in variants if v != "open"]
            setup = Setup(work, data, args.events, job_file, sampler, browser)
            order = ["plain", *variants]
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in order}
            for round_ in range(args.rounds):
                _log(f"round {round_ + 1} of {args.rounds}")
                k = round_ % len(order)
                for variant in order[k:] + order[:k]:
                    sampler.reset()
                    load = os.getloadavg()[0]
                    if variant == "plain":
                        r = await anyio.to_thread.run_sync(w2_plain, setup)
                    else:
                        r = await w2_mesh(setup, variant)
                    r["load_1m"] = round(load, 2)
                    runs[variant].append(r)
                    cpu = r.get("cpu_s", {})
                    _log(
                        f"  {variant}: {r['records_per_s']:,.0f} records/s "
                        f"({r['processing_s']:.2f} s)" + (f", cpu {cpu}" if cpu else "")
                    )
            report["w2"] = _summarize_w2(runs, args.events)
            report["w2_ratios"] = {
                name: _ratios(runs, a, b)
                for name, (a, b) in {
                    "open_vs_closed": ("open", "closed"),
                    "poll_vs_closed": ("poll", "closed"),
                    "closed_vs_no_http": ("closed", "no_http"),
                    "open_vs_no_http": ("open", "no_http"),
                    "closed_vs_plain": ("closed", "plain"),
                }.items()
                if a in runs and b in runs
            }
            if not args.skip_wide:
                _log("200 subtasks")
                sampler.reset()
                report["wide"] = await wide(setup, args)
            report["chromium"] = browser.version if browser else None
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description="W2 with the dashboard open vs closed; the page at 200 subtasks (JSON out)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--events", type=int, default=3_000_000, help="W2 events (a run should last >= 5 s)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="W2 variants, comma-separated"
    )
    parser.add_argument("--skip-wide", action="store_true", help="no 200-subtask part")
    parser.add_argument("--skip-browser", action="store_true", help="no Chromium at all")
    parser.add_argument("--wide-parallelism", type=int, default=100)
    parser.add_argument("--wide-rate", type=int, default=1000, help="records/s in all")
    parser.add_argument("--requests", type=int, default=50, help="per API latency figure")
    parser.add_argument("--page-repeats", type=int, default=3)
    parser.add_argument("--window", type=float, default=10.0, help="seconds of refreshing")
    args = parser.parse_args()
    if args.rounds < 1 or args.page_repeats < 1 or args.requests < 1 or args.events < 1:
        raise SystemExit("--rounds, --page-repeats, --requests and --events must be >= 1")

    load_before = os.getloadavg()[0]
    python_pass = _python_pass(5)
    with tempfile.TemporaryDirectory(prefix="mesh-bench-dashboard-") as tmp:
        report = anyio.run(run, args, Path(tmp))
    result = {
        "benchmark": "dashboard",
        "command": " ".join(["python", "bench/dashboard.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "parameters": {
            "rounds": args.rounds,
            "events": args.events,
            "w2_job": "bench/peers.py w2_stream, 2 nodes x 1 slot, parallelism 2",
            "coordinator_http": HTTP_ARGS,
            "chromium": {"executable": CHROMIUM, "args": CHROMIUM_ARGS},
            "page_polls_s": dict(PAGE_POLLS),
            "wide_parallelism": args.wide_parallelism,
            "wide_rate": args.wide_rate,
            "requests": args.requests,
            "page_repeats": args.page_repeats,
            "window_s": args.window,
        },
        "machine_reference": {"python_c_pass_s": round(python_pass, 4)},
        **report,
    }
    plain = report["w2"].get("plain")
    if plain:
        result["machine_reference"]["plain_loop_w2_records_per_s"] = plain["records_per_s"]
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
