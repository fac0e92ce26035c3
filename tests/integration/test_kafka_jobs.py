"""Jobs that read and write Kafka, on real daemons against a real broker.

* examples/kafka_clicks.py over the example's events loaded into Kafka counts every
  window exactly as the events say (per-partition watermarks: nothing is late);
* a job stopped with a savepoint and resumed at another parallelism (partitions dealt out
  again, the savepoint's pending transactions committed) writes each record once;
* input a source cannot decode, an unreachable broker and a missing topic each give an
  error naming the thing at fault.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, run_job, status_summary, wait_for_state, write_job
from tests.kafka import Kafka, produce_json, read_topic

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kafka_clicks.py"


def _expected_windows() -> collections.Counter[tuple[str, int, int, int]]:
    """(user, window start, window end, clicks) of every 10 s window, from the files."""
    clicks: collections.Counter[tuple[str, int]] = collections.Counter()
    for path in sorted((ROOT / "examples" / "data" / "clicks").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            event = orjson.loads(line)
            if event["kind"] == "click":
                clicks[(event["user"], event["ts"] - event["ts"] % 10_000)] += 1
    return collections.Counter(
        (user, start, start + 10_000, n) for (user, start), n in clicks.items()
    )


def test_the_kafka_clicks_example_counts_every_window_once(kafka: Kafka, tmp_path: Path) -> None:
    """As a user runs it: the loader, then ``mesh run examples/kafka_clicks.py --nodes 2``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["KAFKA_BOOTSTRAP"] = kafka.bootstrap
    loaded = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "data" / "load_kafka.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert int(loaded.stdout.split()[1]) > 10_000  # "sent N events to clicks"
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "run", "examples/kafka_clicks.py", "--nodes", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED" in result.stderr
    assert (
        f"results: Kafka topic clicks-per-user at {kafka.bootstrap} "
        "(read it with isolation.level=read_committed)"
    ) in result.stderr

    windows: collections.Counter[tuple[str, int, int, int]] = collections.Counter()
    for _, _, key, value in read_topic(kafka, "clicks-per-user"):
        assert value is not None
        w = orjson.loads(value)
        assert key == w["key"].encode()
        windows[(w["key"], w["window_start"], w["window_end"], w["count"])] += 1
    expected = _expected_windows()
    # Per-partition watermarks: no event is late, so every window is complete and once.
    assert (sorted(windows - expected), sorted(expected - windows)) == ([], [])


def _rescale_job(tmp_path: Path, bootstrap: str) -> Path:
    return write_job(
        tmp_path,
        f"""
        from mesh import Job, sinks, sources

        job = Job("kafka-rescale", parallelism=3, checkpoint_interval="300ms")
        events = job.source(
            sources.Kafka("rs-in", bootstrap={bootstrap!r}, group="rs")
        ).uid("events")
        events.map(lambda e: {{"i": e["i"], "twice": 2 * e["i"]}}).uid("double").sink(
            sinks.Kafka("rs-out", bootstrap={bootstrap!r}, key=lambda r: str(r["i"]))
        ).uid("out")
        """,
    )


def _output_ids(kafka: Kafka) -> collections.Counter[int]:
    return collections.Counter(
        orjson.loads(value)["i"] for _, _, _, value in read_topic(kafka, "rs-out") if value
    )


def test_a_savepoint_and_a_rescale_keep_kafka_output_exactly_once(
    local_cluster: Any, kafka: Kafka, tmp_path: Path
) -> None:
    kafka.create_topic("rs-in", 6)
    kafka.create_topic("rs-out", 4)
    first_half = 20_000
    produce_json(kafka, "rs-in", ({"i": i} for i in range(first_half)), key=lambda e: str(e["i"]))
    cluster = local_cluster(nodes=2, slots=3)
    job_file = _rescale_job(tmp_path, kafka.bootstrap)

    async def scenario() -> list[dict[str, Any]]:
        async with open_client(cluster.address) as client:
            first = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await poll_until(
                lambda: anyio.to_thread.run_sync(_output_ids, kafka),
                until=lambda ids: len(ids) == first_half,
                timeout_s=90,
                what="the first half committed to rs-out",
                show=lambda ids: f"{len(ids)} distinct ids",
            )
            savepoint = await client.savepoint(
                first, directory=str(tmp_path / "savepoints"), cancel=True
            )
            before = await wait_for_state(client, first, ("CANCELED",))
            await anyio.to_thread.run_sync(
                lambda: produce_json(
                    kafka,
                    "rs-in",
                    ({"i": i} for i in range(first_half, 2 * first_half)),
                    key=lambda e: str(e["i"]),
                )
            )
            resumed = prepare_submission(
                job_file, base_dir=tmp_path, parallelism=2, restore_from=savepoint
            )
            second = await client.submit(resumed)
            await poll_until(
                lambda: anyio.to_thread.run_sync(_output_ids, kafka),
                until=lambda ids: len(ids) == 2 * first_half,
                timeout_s=90,
                what="every record committed to rs-out",
                show=lambda ids: f"{len(ids)} distinct ids",
            )
            after = await client.status(second)
            await client.cancel(second)
            await wait_for_state(client, second, ("CANCELED",))
            return [before, dict(after)]

    before, after = anyio.run(scenario)

    assert len(before["tasks"][0]["subtasks"]) == 3
    assert len(after["tasks"][0]["subtasks"]) == 2
    assert after["restored_from"] is not None
    ids = _output_ids(kafka)
    assert set(ids) == set(range(2 * first_half))
    assert [i for i, n in ids.items() if n > 1] == []


# -- bad input ------------------------------------------------------------------------------------


def _bad_values_topic(kafka: Kafka, topic: str) -> None:
    kafka.create_topic(topic, 1)
    from confluent_kafka import Producer

    producer = Producer(kafka.client_config())
    for value in (b'{"n": 1}', b"not json", b'{"n": 3}'):
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


@pytest.mark.asyncio
async def test_a_value_that_is_not_json_is_a_dead_letter_with_its_offset(
    inprocess_cluster: Any, kafka: Kafka, tmp_path: Path
) -> None:
    _bad_values_topic(kafka, "bad-dl")
    job_file = write_job(
        tmp_path,
        f"""
        from mesh import Job, sinks, sources

        job = Job("kafka-bad", on_error="dead_letter", dead_letter=sinks.Collect())
        job.source(
            sources.Kafka("bad-dl", bootstrap={kafka.bootstrap!r}, stop_at="latest")
        ).uid("events").sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=1, slots=2) as cluster:
        status, collected = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FINISHED", status["error"]
    good = [r for r in collected if "operator" not in r]
    dead = [r for r in collected if "operator" in r]
    assert good == [{"n": 1}, {"n": 3}]
    assert [(d["operator"], d["record"], d["origin"]) for d in dead] == [
        ("events", "not json", {"topic": "bad-dl", "partition": 0, "offset": 1})
    ]


@pytest.mark.asyncio
async def test_a_value_that_is_not_json_fails_the_job_naming_where_it_is(
    inprocess_cluster: Any, kafka: Kafka, tmp_path: Path
) -> None:
    _bad_values_topic(kafka, "bad-fail")
    job_file = write_job(
        tmp_path,
        f"""
        from mesh import Job, RestartStrategy, sinks, sources

        job = Job("kafka-bad", restart=RestartStrategy.none())
        job.source(
            sources.Kafka("bad-fail", bootstrap={kafka.bootstrap!r}, stop_at="latest")
        ).sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=1, slots=1) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FAILED"
    assert "bad-fail" in status["error"] and "partition 0" in status["error"]
    assert "offset 1" in status["error"], status["error"]


@pytest.mark.asyncio
async def test_an_unreachable_broker_and_a_missing_topic_fail_clearly(
    inprocess_cluster: Any, kafka: Kafka, tmp_path: Path
) -> None:
    closed = "127.0.0.1:9"  # the discard port: nothing listens on it here
    unreachable = write_job(
        tmp_path,
        f"""
        from mesh import Job, RestartStrategy, sinks, sources

        job = Job("kafka-unreachable", restart=RestartStrategy.none())
        job.source(sources.Kafka("t", bootstrap={closed!r})).sink(sinks.Collect())
        """,
        "unreachable.py",
    )
    missing = write_job(
        tmp_path,
        f"""
        from mesh import Job, RestartStrategy, sinks, sources

        job = Job("kafka-missing", restart=RestartStrategy.none())
        job.source(sources.Kafka("no-such-topic", bootstrap={kafka.bootstrap!r})).sink(
            sinks.Collect()
        )
        """,
        "missing.py",
    )
    async with inprocess_cluster(nodes=1, slots=1) as cluster:
        with anyio.fail_after(60):
            down, _ = await run_job(cluster.address, unreachable, base_dir=tmp_path)
            absent, _ = await run_job(cluster.address, missing, base_dir=tmp_path)
    assert down["state"] == "FAILED"
    assert closed in down["error"], status_summary(down)
    assert absent["state"] == "FAILED"
    assert "no-such-topic" in absent["error"], status_summary(absent)
