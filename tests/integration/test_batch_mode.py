"""Batch mode on real daemons: the final results equal streaming mode's for every
example and, over random inputs (Hypothesis), for per-key totals (W2) and event-time
windows (W3); a batch job takes no checkpoints and combines before its keyed
exchanges; an unbounded source is refused."""

from __future__ import annotations

import collections
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import GraphError
from mesh.client.client import prepare_submission
from mesh.client.local_cluster import LocalCluster
from tests.helpers import read_parts, run_job, write_job

ROOT = Path(__file__).resolve().parents[2]
# Every example but the one that needs a Kafka broker (tests/integration/test_kafka_jobs.py
# runs it against one).
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.py")) if p.stem != "kafka_clicks"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(nodes=2, slots=4, state_dir=tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _run(cluster: LocalCluster, job_file: Path, base_dir: Path, mode: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        from mesh.client.client import open_client
        from tests.helpers import wait_for_state

        submission = prepare_submission(job_file, base_dir=base_dir, mode=mode)
        async with open_client(cluster.address) as client:
            job_id = await client.submit(submission)
            return await wait_for_state(client, job_id, ("FINISHED", "FAILED"), timeout_s=60)

    status = anyio.run(go)
    assert status["state"] == "FINISHED", status["error"]
    return status


def _outputs(base_dir: Path) -> dict[str, list[Any]]:
    """Each output directory's committed records: JSON lines, or CSV rows (the custom
    connector's sink)."""
    outputs = {}
    for directory in sorted((base_dir / "out").iterdir()):
        records = read_parts(directory)
        for path in sorted(directory.glob("part-*.csv")):
            with path.open(newline="") as f:
                records.extend(csv.DictReader(f))
        outputs[directory.name] = records
    return outputs


def _last_per_key(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[Any, dict[str, Any]] = {}
    for record in records:
        last[record["key"]] = record
    return list(last.values())


def _canonical(records: list[Any]) -> list[str]:
    import orjson

    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode() for r in records)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_gives_the_same_final_results_in_both_modes(
    cluster: LocalCluster, tmp_path: Path, example: Path
) -> None:
    results = {}
    for mode in ("streaming", "batch"):
        base = tmp_path / mode
        base.mkdir()
        (base / "examples").symlink_to(ROOT / "examples")
        status = _run(cluster, example, base, mode)
        if mode == "batch":
            assert status["checkpoints"] is None or status["checkpoints"]["completed"] == 0
        results[mode] = _outputs(base)
    streaming, batch = results["streaming"], results["batch"]
    assert streaming.keys() == batch.keys() and streaming
    for name in streaming:
        running = example.stem == "wordcount"  # a running count per word: its last values
        expected = _last_per_key(streaming[name]) if running else streaming[name]
        assert _canonical(batch[name]) == _canonical(expected), name
        assert batch[name], name


TOTALS_AND_WINDOWS = """
    from mesh import Aggregate, Job, WatermarkStrategy, sinks, sources, windows

    EVENTS = {events!r}

    class CountSum(Aggregate):
        def create(self):
            return {{"count": 0, "sum": 0}}

        def add(self, acc, e):
            return {{"count": acc["count"] + 1, "sum": acc["sum"] + e["v"]}}

        def merge(self, a, b):
            return {{"count": a["count"] + b["count"], "sum": a["sum"] + b["sum"]}}

    job = Job("random", parallelism={p})
    events = job.source(
        sources.Collection(EVENTS),
        watermarks=WatermarkStrategy.bounded(40, timestamp=lambda e: e["ts"]),
    )
    keyed = events.key_by(lambda e: e["k"])
    keyed.aggregate(CountSum()).sink(sinks.JsonLines("out/totals"))
    keyed.sum("v").sink(sinks.JsonLines("out/sums"))
    keyed.window(windows.Tumbling(100)).count().sink(sinks.JsonLines("out/windows"))
"""


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(
        st.fixed_dictionaries(
            {
                "k": st.sampled_from(["a", "b", "c", "d"]),
                "ts": st.integers(0, 2000),
                "v": st.integers(-5, 50),
            }
        ),
        min_size=1,
        max_size=300,
    ),
    p=st.integers(1, 3),
)
def test_random_inputs_give_the_same_totals_and_windows(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory, events: list[Any], p: int
) -> None:
    events = sorted(events, key=lambda e: e["ts"])  # within the 40 ms bound: nothing late
    results = {}
    for mode in ("streaming", "batch"):
        base = tmp_path_factory.mktemp(mode)
        job_file = write_job(base, TOTALS_AND_WINDOWS.format(events=events, p=p), "job.py")
        _run(cluster, job_file, base, mode)
        results[mode] = _outputs(base)
    streaming, batch = results["streaming"], results["batch"]
    expected_totals = collections.defaultdict(lambda: {"count": 0, "sum": 0})
    for e in events:
        expected_totals[e["k"]]["count"] += 1
        expected_totals[e["k"]]["sum"] += e["v"]
    assert {r["key"]: r["value"] for r in batch["totals"]} == expected_totals
    assert len(batch["totals"]) == len(expected_totals)
    assert _canonical(batch["totals"]) == _canonical(_last_per_key(streaming["totals"]))
    assert sorted((r["k"], r["v"]) for r in batch["sums"]) == sorted(
        (k, t["sum"]) for k, t in expected_totals.items()
    )
    assert _canonical(batch["windows"]) == _canonical(streaming["windows"])


def test_an_unbounded_source_is_refused_in_batch_mode(tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("forever")
        job.source(sources.Generator(lambda i: i), name="ticks").sink(sinks.Collect())
        """,
    )
    with pytest.raises(GraphError, match=r"batch mode needs bounded sources: source 'ticks'"):
        prepare_submission(job_file, mode="batch")


def test_batch_mode_in_the_job_file_runs_without_checkpoints(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("batchy", parallelism=2, mode="batch", checkpoint_interval="50ms")
        numbers = job.source(sources.Generator(lambda i: i % 7, count=20000))
        numbers.key_by(lambda n: n).count().sink(sinks.Collect())
        """,
    )
    status, records = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
    assert status["state"] == "FINISHED", status["error"]
    assert sorted((r["key"], r["count"]) for r in records) == [
        (n, len(range(n, 20000, 7))) for n in range(7)
    ]
    assert status["checkpoints"] is None or status["checkpoints"]["completed"] == 0
    # The sources combined before the keyed exchange: the counts took one partial per
    # key per source subtask, not the 20000 records.
    (counts,) = [t for t in status["tasks"] if "Count" in t["name"]]
    assert sum(s["records_in"] for s in counts["subtasks"]) <= 7 * 2


def test_a_savepoint_of_a_combining_batch_job_loses_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """A savepoint (Ctrl-C in mesh run takes one) reaches the combiners mid-input: their
    partials go out before the barrier, so the job resumed from it counts every record."""
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("batch-savepoint", parallelism=2, mode="batch")
        users = job.source(sources.Generator(lambda i: {"user": f"u{i % 4}"}, count=240, rate=60))
        users.key_by(lambda r: r["user"]).count().sink(sinks.JsonLines("out/counts"))
        """,
    )

    async def scenario() -> dict[str, Any]:
        from mesh.client.client import open_client
        from tests.helpers import poll_until, wait_for_state

        async with open_client(cluster.address) as client:
            first = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await poll_until(
                lambda: client.status(first),
                until=lambda s: (
                    s["state"] == "RUNNING" and s["tasks"][0]["subtasks"][0]["records_in"] >= 30
                ),
                timeout_s=30,
                what="the sources to read a part of their input",
            )
            savepoint = await client.savepoint(
                first, directory=str(tmp_path / "savepoints"), cancel=True
            )
            await wait_for_state(client, first, ("CANCELED",))
            resumed = prepare_submission(job_file, base_dir=tmp_path, restore_from=savepoint)
            second = await client.submit(resumed)
            return await wait_for_state(client, second, ("FINISHED", "FAILED"), timeout_s=60)

    final = anyio.run(scenario)
    assert final["state"] == "FINISHED", final["error"]
    counts = read_parts(tmp_path / "out" / "counts")
    assert sorted((r["key"], r["count"]) for r in counts) == [(f"u{k}", 60) for k in range(4)]
