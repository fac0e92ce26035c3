"""Chaos: the windowed clicks job with a node killed midway commits the same windows.

The clicks job (examples/clicks.py as tests/jobs/clicks_chaos.py: clicks per user in
10-second event-time windows, an exactly-once JsonLines sink) runs twice on real daemons
over the same deterministic events (made like examples/data/make_clicks.py: 3 files of
200 s of event time each): once undisturbed, and once with a node running window
subtasks killed with SIGKILL right after a checkpoint (the 2nd or later) once a third
of the events were read, while windows are still open; a replacement node joins and the
job's second attempt restores that checkpoint. The source replays the events at a
capped rate, so the kill lands mid-stream.

Both runs must commit exactly the same window results — each (user, window) once — and
both must equal the counts a plain Python loop makes from the events.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from mesh.client.client import prepare_submission
from tests.chaos.harness import ROOT, ChaosRun, SeqJob

pytestmark = pytest.mark.slow

JOB = ROOT / "tests" / "jobs" / "clicks_chaos.py"
START = 1_700_000_000_000  # as examples/data/make_clicks.py
WINDOW_MS = 10_000


def _load_make_clicks() -> Any:
    path = ROOT / "examples" / "data" / "make_clicks.py"
    spec = importlib.util.spec_from_file_location("make_clicks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_clicks(directory: Path) -> None:
    """The example's events (examples/data/make_clicks.py), written into ``directory``."""
    _load_make_clicks().write_clicks(directory)


def read_events(directory: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        events.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    return events


def reference(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Clicks per (user, 10 s window), by a plain loop."""
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for event in events:
        if event["kind"] == "click":
            counts[event["user"], event["ts"] - event["ts"] % WINDOW_MS] += 1
    return [
        {"key": user, "window_start": start, "window_end": start + WINDOW_MS, "count": n}
        for (user, start), n in counts.items()
    ]


def multiset(records: list[dict[str, Any]]) -> collections.Counter[tuple[Any, ...]]:
    return collections.Counter(tuple(sorted(r.items())) for r in records)


@dataclass(frozen=True)
class ClicksJob(SeqJob):
    """The clicks job's settings (CLICKS_* environment variables of clicks_chaos.py)."""

    input: str = ""
    rate: float = 5000.0
    interval: str = "200ms"
    restarts: int | None = 3

    def env(self, out: Path) -> dict[str, str]:
        env = {
            "CLICKS_INPUT": self.input,
            "CLICKS_OUT": str(out),
            "CLICKS_RATE": str(self.rate),
            "CLICKS_INTERVAL": self.interval,
            "CLICKS_RESTART_DELAY": self.restart_delay,
        }
        if self.restarts is not None:
            env["CLICKS_RESTARTS"] = str(self.restarts)
        return env


class ClicksRun(ChaosRun):
    """A ``ChaosRun`` of the clicks job instead of the sequence job."""

    async def submit(self) -> str:
        os.environ.update(self.job.env(self.out))  # the client imports the job file too
        submission = prepare_submission(JOB, base_dir=self.workdir)
        self.job_id = await self.request(lambda c: c.submit(submission))
        self.note("submitted")
        return self.job_id


@pytest.fixture
def clicks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    runs: list[ClicksRun] = []
    for key in ClicksJob().env(tmp_path):  # every CLICKS_* variable goes after the test
        monkeypatch.setenv(key, "")
    for key in [k for k in os.environ if k.startswith("SEQ_")]:
        monkeypatch.delenv(key)

    def make(name: str, job: ClicksJob, **kwargs: Any) -> ClicksRun:
        run = ClicksRun(tmp_path / name, job, **kwargs)
        runs.append(run)
        run.start()
        return run

    yield make
    for run in runs:
        run.stop()


def task_of(status: dict[str, Any], uid: str) -> dict[str, Any]:
    return next(t for t in status["tasks"] if uid in [o["uid"] for o in t["operators"]])


def read(status: dict[str, Any]) -> int:
    """Events the source subtasks read (in this attempt)."""
    return sum(st["records_in"] for st in task_of(status, "clicks")["subtasks"])


def emitted(status: dict[str, Any]) -> int:
    """Window results the window subtasks emitted (in this attempt)."""
    return sum(st["records_out"] for st in task_of(status, "clicks-per-user")["subtasks"])


def assert_no_late_records(status: dict[str, Any]) -> None:
    windows = task_of(status, "clicks-per-user")["subtasks"]
    assert [(st["late_records"], st["late_dropped"]) for st in windows] == [(0, 0)] * len(windows)


def test_windows_after_a_node_killed_midway_equal_an_undisturbed_run(
    clicks: Any, tmp_path: Path
) -> None:
    data = tmp_path / "clicks"
    make_clicks(data)
    events = read_events(data)
    expected = multiset(reference(events))
    last_ts = max(e["ts"] for e in events)
    job = ClicksJob(input=str(data / "*.jsonl"))

    calm = clicks("calm", job, nodes=2)

    async def undisturbed() -> dict[str, Any]:
        await calm.submit()
        status: dict[str, Any] = await calm.wait_final()
        return status

    calm_final = anyio.run(undisturbed)
    assert calm_final["state"] == "FINISHED", calm_final["error"]
    assert calm_final["restarts"] == 0
    assert (read(calm_final), emitted(calm_final)) == (len(events), len(expected))
    assert_no_late_records(calm_final)
    calm.stop()

    chaos = clicks("chaos", job, nodes=3, seed=1)

    async def disturbed() -> tuple[int, dict[str, Any], dict[str, Any]]:
        await chaos.submit()
        await chaos.wait_running()
        await chaos.wait(lambda s: read(s) >= len(events) // 3, "a third of the events read")
        # Right after the next checkpoint completed: kill a node running window subtasks
        # (keyed window state and timers).
        checkpoint = await chaos.wait_checkpoint(after=await chaos.wait_checkpoint())
        at_kill = await chaos.status()
        window_nodes = {st["node"] for st in task_of(at_kill, "clicks-per-user")["subtasks"]}
        victim = chaos.random.choice(sorted(window_nodes))
        chaos.kill(chaos.node(victim))
        chaos.add_node()  # a replacement, so the cluster keeps its slots
        status = await chaos.wait_running(attempt_above=0)
        assert victim in status["failures"][-1]["error"]
        return checkpoint, at_kill, await chaos.wait_final()

    checkpoint, at_kill, final = anyio.run(disturbed)
    assert checkpoint >= 2
    # Killed mid-stream: the source had not read everything, windows were still open.
    assert read(at_kill) < len(events)
    window_marks = [st["watermark"] for st in task_of(at_kill, "clicks-per-user")["subtasks"]]
    assert all(mark is None or mark < last_ts for mark in window_marks), window_marks

    # It finished in its second attempt, restored from a checkpoint (not the start).
    assert final["state"] == "FINISHED", final["error"]
    assert (final["attempt"], final["restarts"]) == (1, 1)
    restored = re.search(r"chk-0*(\d+)", final["restored_from"] or "")
    assert restored is not None, final["restored_from"]
    assert int(restored.group(1)) >= checkpoint
    # The restored checkpoint was mid-stream: the second attempt read only the rest, and
    # fired the windows still open in it, not those the first attempt committed.
    assert 0 < read(final) < len(events)
    assert 0 < emitted(final) < len(expected)
    assert_no_late_records(final)

    calm_records, chaos_records = calm.committed(), chaos.committed()
    for records in (calm_records, chaos_records):
        windows = collections.Counter((r["key"], r["window_start"]) for r in records)
        assert [w for w, n in windows.items() if n > 1] == []  # no window emitted twice
    assert multiset(chaos_records) == multiset(calm_records)
    assert multiset(calm_records) == expected
    assert calm.leftovers() == [] and chaos.leftovers() == []
