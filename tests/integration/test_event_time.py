"""Event time on real daemons: windows against a batch computation at parallelism 1 and
3, late data and side outputs, keyed timers, and watermarks in ``mesh status``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.client.client import open_client, prepare_submission
from mesh.client.local_cluster import LocalCluster
from mesh.client.render import format_status
from tests.helpers import poll_until, run_job, wait_for_state, write_job
from tests.windowing import batch_windows, random_events

WINDOWS = {
    "tumbling": ("windows.Tumbling(1000)", {"size": 1000}),
    "sliding": ("windows.Sliding(1000, 250)", {"size": 1000, "slide": 250}),
    "session": ("windows.Session(300)", {"gap": 300}),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(nodes=2, slots=3, state_dir=tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _windowed_job(directory: Path, events: list[dict[str, Any]], window: str, p: int) -> Path:
    return write_job(
        directory,
        f"""
        from mesh import Job, WatermarkStrategy, sinks, sources, windows

        EVENTS = {events!r}
        job = Job("windows", parallelism={p})
        events = job.source(
            sources.Collection(EVENTS),
            watermarks=WatermarkStrategy.bounded(1500, timestamp=lambda e: e["ts"]),
        )
        keyed = events.key_by(lambda e: e["k"])
        keyed.window({window}).count().sink(sinks.Collect())
        keyed.window({window}).reduce(lambda a, b: {{**a, "v": a["v"] + b["v"]}}).sink(
            sinks.Collect()
        )
        """,
    )


@pytest.mark.parametrize("parallelism", [1, 3])
@pytest.mark.parametrize("kind", sorted(WINDOWS))
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32), count=st.integers(1, 6000), delay=st.integers(0, 1500))
def test_windows_on_daemons_equal_a_batch_computation(
    cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    parallelism: int,
    seed: int,
    count: int,
    delay: int,
) -> None:
    # Thousands of events: sources send watermarks after each batch of 1024, so windows
    # fire while the stream runs, not only at the end.
    events = random_events(seed, count, delay)
    window, params = WINDOWS[kind]
    job_file = _windowed_job(tmp_path_factory.mktemp("job"), events, window, parallelism)
    status, collected = anyio.run(lambda: run_job(cluster.address, job_file))
    assert status["state"] == "FINISHED", status["error"]
    counts: dict[Any, Any] = {}
    sums: dict[Any, Any] = {}
    for r in collected:
        index = (r["key"], r["window_start"], r["window_end"])
        target, value = (counts, r["count"]) if "count" in r else (sums, r["value"]["v"])
        assert index not in target, f"window {index} emitted twice"
        target[index] = value
    assert counts == batch_windows(events, kind, **params)
    assert sums == batch_windows(events, kind, value=lambda e: e["v"], **params)


def test_late_records_reach_the_side_output_and_within_lateness_update_the_window(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # The record at 3990 pushes the watermark past [0, 1000) + lateness before the late
    # records come (batches later: the source sends a watermark after each batch).
    events = [
        {"k": "a", "ts": 10, "v": 1},
        {"k": "a", "ts": 20, "v": 1},
        {"k": "a", "ts": 1_500, "v": 1},  # [1000, 2000): kept by the lateness
        {"k": "a", "ts": 3_990, "v": 1},  # watermark 3989: [0, 1000) + 2500 is over
        *[{"k": "z", "ts": 3_990, "v": 0}] * 3000,  # filtered out; a batch boundary
        {"k": "a", "ts": 30, "v": 1},
        {"k": "a", "ts": 1_700, "v": 1},
    ]
    job_file = write_job(
        tmp_path,
        f"""
        from mesh import Job, WatermarkStrategy, sinks, sources, windows

        job = Job("late", parallelism=1)
        events = job.source(
            sources.Collection({events!r}),
            watermarks=WatermarkStrategy.bounded(0, timestamp=lambda e: e["ts"]),
        )
        counts = (
            events.filter(lambda e: e["k"] == "a")
            .key_by(lambda e: e["k"])
            .window(windows.Tumbling(1000))
            .allowed_lateness(2500)
            .late_output("late")
            .count()
        )
        counts.sink(sinks.Collect())
        counts.side_output("late").map(lambda e: {{"late": e}}).sink(sinks.Collect())
        """,
    )
    status, collected = anyio.run(lambda: run_job(cluster.address, job_file))
    assert status["state"] == "FINISHED", status["error"]
    late = [r["late"] for r in collected if "late" in r]
    counts = [(r["window_start"], r["count"]) for r in collected if "count" in r]
    assert late == [{"k": "a", "ts": 30, "v": 1}]
    # [1000, 2000) fired at watermark 3989 with 1, then again with the late 1700.
    assert sorted(counts) == [(0, 2), (1000, 1), (1000, 2), (3000, 1)]
    late_counted = sum(s["late_records"] for t in status["tasks"] for s in t["subtasks"])
    assert late_counted == 1


def test_fraud_timers_on_daemons(cluster: LocalCluster, tmp_path: Path) -> None:
    # A small amount then a large one within a minute alerts; the timer clears the
    # small amount a minute later, so a large amount after that does not.
    events = [
        {"user": "u1", "amount": 0.5, "ts": 0},
        {"user": "u1", "amount": 900, "ts": 30_000},  # alert
        {"user": "u2", "amount": 0.5, "ts": 0},
        # Ordinary payments; the watermark after their batches passes 60s.
        *[{"user": "u9", "amount": 5, "ts": 65_000}] * 2000,
        {"user": "u2", "amount": 900, "ts": 70_000},  # the timer cleared u2 at 60s
        {"user": "u3", "amount": 900, "ts": 75_000},
    ]
    job_file = write_job(
        tmp_path,
        f"""
        from mesh import Job, KeyedProcessFunction, WatermarkStrategy, sinks, sources

        class Fraud(KeyedProcessFunction):
            def process(self, record, ctx):
                last = ctx.state.value("last_small")
                if record["amount"] < 1 and last.get() is None:
                    last.set(record["ts"])
                    ctx.timers.event_time(record["ts"] + 60_000)
                elif record["amount"] > 500 and last.get() is not None:
                    yield {{"user": ctx.key, "alert": "small-then-large", "at": ctx.timestamp}}

            def on_timer(self, ts, ctx):
                ctx.state.value("last_small").clear()
                ctx.output("expired", {{"user": ctx.key, "at": ts}})

        job = Job("fraud", parallelism=2)
        tx = job.source(
            sources.Collection({events!r}),
            watermarks=WatermarkStrategy.bounded(0, timestamp=lambda e: e["ts"]),
        ).set_parallelism(1)
        alerts = tx.key_by(lambda t: t["user"]).process(Fraud())
        alerts.sink(sinks.Collect())
        alerts.side_output("expired").sink(sinks.Collect())
        """,
    )
    status, collected = anyio.run(lambda: run_job(cluster.address, job_file))
    assert status["state"] == "FINISHED", status["error"]
    alerts = [r for r in collected if "alert" in r]
    expired = sorted((r["user"], r["at"]) for r in collected if "alert" not in r)
    assert alerts == [{"user": "u1", "alert": "small-then-large", "at": 30_000}]
    assert expired == [("u1", 60_000), ("u2", 60_000)]


def test_status_shows_each_subtasks_watermark(cluster: LocalCluster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, WatermarkStrategy, sinks, sources, windows

        job = Job("live", parallelism=1, watermark_interval="50ms")
        events = job.source(
            sources.Generator(lambda i: {"k": i % 3, "ts": 1_000_000 + i * 10}, rate=2000),
            watermarks=WatermarkStrategy.bounded("1s", timestamp=lambda e: e["ts"]),
        )
        events.key_by(lambda e: e["k"]).window(windows.Tumbling("1s")).count().sink(
            sinks.Collect()
        )
        """,
    )

    async def scenario() -> dict[str, Any]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            try:

                def advanced(status: dict[str, Any]) -> bool:
                    marks = [s["watermark"] for t in status["tasks"] for s in t["subtasks"]]
                    return all(m is not None and m > 1_001_000 for m in marks)

                return await poll_until(
                    lambda: client.status(job_id),
                    until=advanced,
                    timeout_s=20,
                    interval_s=0.1,
                    what="every subtask's watermark past 1_001_000",
                )
            finally:
                await client.cancel(job_id)

    status = anyio.run(scenario)
    subtasks = [s for t in status["tasks"] for s in t["subtasks"]]
    for subtask in subtasks:
        assert subtask["watermark"] > 1_001_000
        assert subtask["watermark_lag_ms"] > 0  # event time of 1970 is far behind now
    shown = format_status(status)
    assert "WATERMARK" in shown and "WM LAG" in shown
    assert str(subtasks[0]["watermark"]) in shown
