"""The event-time examples, run as a user would (``mesh run examples/<x>.py --nodes 2``),
give exactly what a plain batch computation over the same data files gives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import read_parts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with the examples, as a user's checkout would have them."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def run_example(workdir: Path, name: str) -> list[Any]:
    """Run examples/<name>.py on a local cluster of 2 nodes; the committed results."""
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "run", f"examples/{name}.py", "--nodes", "2"],
        cwd=workdir,
        env={k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED" in result.stderr and f"out/{name}" in result.stderr
    return read_parts(workdir / "out" / name)


def load(workdir: Path, pattern: str) -> list[Any]:
    files = sorted((workdir / "examples" / "data").glob(pattern))
    assert files, pattern
    return [orjson.loads(line) for f in files for line in f.read_bytes().splitlines() if line]


def exactly_once(rows: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """The rows as a set, after checking that none is there twice."""
    repeated = [row for row, n in Counter(rows).items() if n > 1]
    assert not repeated, f"{len(repeated)} results emitted more than once, e.g. {repeated[0]}"
    return set(rows)


def test_clicks_counts_clicks_per_user_and_10s_window(workdir: Path) -> None:
    counts = run_example(workdir, "clicks")
    got = exactly_once([(r["key"], r["window_start"], r["window_end"], r["count"]) for r in counts])

    per_window = Counter(
        (e["user"], e["ts"] - e["ts"] % 10_000)
        for e in load(workdir, "clicks/*.jsonl")
        if e["kind"] == "click"
    )
    expected = {(user, start, start + 10_000, n) for (user, start), n in per_window.items()}
    assert len(expected) > 1000
    assert got == expected


GAP = 3_000  # examples/sessions.py: windows.Session("3s")


def test_sessions_cut_each_users_events_at_gaps_over_3s(workdir: Path) -> None:
    sessions = run_example(workdir, "sessions")
    got = exactly_once(
        [(r["key"], r["window_start"], r["window_end"], orjson.dumps(r["value"])) for r in sessions]
    )

    by_user: dict[str, list[dict[str, Any]]] = {}
    for event in load(workdir, "clicks/*.jsonl"):
        by_user.setdefault(event["user"], []).append(event)
    expected = set()
    for user, events in by_user.items():
        events.sort(key=lambda e: e["ts"])
        runs: list[list[dict[str, Any]]] = [[events[0]]]
        for before, event in pairwise(events):
            if event["ts"] - before["ts"] > GAP:  # events at most GAP apart share one
                runs.append([])
            runs[-1].append(event)
        for run in runs:
            first, last = run[0]["ts"], run[-1]["ts"]
            value = {
                "events": len(run),
                "pages": sorted({e["page"] for e in run}),
                "first": first,
                "last": last,
            }
            expected.add((user, first, last + GAP, orjson.dumps(value)))
    assert len(expected) > 10 * len(by_user)  # a meaningful number of sessions per user
    assert got == expected


def test_fraud_alerts_on_a_tiny_then_a_large_amount_within_60s(workdir: Path) -> None:
    alerts = run_example(workdir, "fraud")
    got = exactly_once([(r["user"], r["alert"], r["ts"], r["small_ts"]) for r in alerts])

    by_user: dict[str, list[dict[str, Any]]] = {}
    for t in load(workdir, "transactions/*.jsonl"):
        by_user.setdefault(t["user"], []).append(t)
    expected = set()
    expired = set()
    for user, transactions in by_user.items():
        armed = None  # the time of the tiny amount remembered, until its timer fires
        for t in sorted(transactions, key=lambda t: t["ts"]):
            if armed is not None and t["ts"] >= armed + 60_000:
                # The data keep watermark timing out of it: whatever comes next for the
                # user is far past the timer (see examples/data/make_transactions.py).
                assert t["ts"] > armed + 120_000 or 1 <= t["amount"] <= 500
                expired.add(user)
                armed = None
            if t["amount"] < 1 and armed is None:
                armed = t["ts"]
            elif t["amount"] > 500 and armed is not None:
                assert t["ts"] < armed + 30_000  # well within the 60 s
                expected.add((user, "small-then-large", t["ts"], armed))
    alerted = {user for user, *_ in expected}
    assert len(alerted) >= 10 and len(expected) > len(alerted)  # some users alert twice
    big_after_expiry = {
        user
        for user in expired - alerted
        if any(t["amount"] > 500 for t in by_user[user])
        and any(t["amount"] < 1 for t in by_user[user])
    }
    assert len(big_after_expiry) >= 5  # a large amount too late after a tiny one
    assert len(by_user) - len(alerted) >= 80  # and many users with no alert at all
    assert got == expected
