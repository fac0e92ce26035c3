"""Chaos with Kafka in and out: real daemons and a real broker, processes killed mid-run.

The job (tests/jobs/kafka_count.py) reads JSON events from a 6-partition topic with a
source of parallelism 3, counts them per user and writes every running count to an
output topic. A ``read_committed`` reader of that topic must then see, for each user
with n events, the counts 1..n: exactly once with ``exactly_once`` (Kafka transactions
tied to checkpoints), at least once with ``at_least_once``.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from tests.chaos.harness import FINAL, ChaosRun, SeqJob
from tests.kafka import Kafka, produce_json, read_topic

pytestmark = pytest.mark.slow

JOB = Path(__file__).resolve().parents[1] / "jobs" / "kafka_count.py"
USERS = 997
# Events/s the 1,000,000-event runs read at most (about 10 s of input): unpaced, a fast
# machine could finish the job before the third kill.
PACE = 100_000


def _events(count: int) -> Any:
    return ({"user": f"u{i % USERS}", "i": i} for i in range(count))


def _expected(count: int) -> collections.Counter[tuple[str, int]]:
    per_user = collections.Counter(f"u{i % USERS}" for i in range(count))
    return collections.Counter(
        (user, n) for user, total in per_user.items() for n in range(1, total + 1)
    )


def _committed(kafka: Kafka, topic: str) -> collections.Counter[tuple[str, int]]:
    """The (user, count) pairs a read_committed reader sees, with how often each."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    for _, _, key, value in read_topic(kafka, topic, timeout_s=120):
        assert value is not None
        record = orjson.loads(value)
        assert key == record["key"].encode()  # keyed by user, as the sink was told
        seen[(record["key"], record["count"])] += 1
    return seen


def _run(
    chaos: Any,
    kafka: Kafka,
    semantic: str,
    *,
    events: str,
    counts: str,
    rate: int = 0,
    txn_timeout_ms: int = 60_000,
) -> ChaosRun:
    env = {
        "KC_RATE": str(rate),
        "KC_TXN_TIMEOUT_MS": str(txn_timeout_ms),
        "KC_BOOTSTRAP": kafka.bootstrap,
        "KC_IN": events,
        "KC_OUT": counts,
        "KC_SEMANTIC": semantic,
        "KC_INTERVAL": "500ms",
    }
    return chaos(SeqJob(), nodes=3, slots=2, job_file=JOB, env=env, seed=17)


async def _kill_twice_and_the_coordinator(run: ChaosRun) -> dict[str, Any]:
    """Kill -9 a node running the job twice (each replaced), then the coordinator, each
    right after a checkpoint completed; returns the job's final status."""
    await run.submit()
    status = await run.wait_running()
    for _ in range(2):
        checkpoint = await run.wait_checkpoint()
        await run.wait_checkpoint(after=checkpoint)
        victim = run.random.choice(run.nodes_of(status))
        run.kill(run.node(victim))
        run.add_node()
        status = await run.wait_running(attempt_above=status["attempt"])
    checkpoint = await run.wait_checkpoint()
    await run.wait_checkpoint(after=checkpoint)
    assert run.cluster.coordinator is not None
    run.kill(run.cluster.coordinator)
    run.restart_coordinator()
    await run.wait_running(attempt_above=status["attempt"])
    return await run.wait_final(timeout_s=300)


def test_exactly_once_through_two_node_kills_and_a_coordinator_kill(
    chaos: Any, kafka: Kafka
) -> None:
    count = 1_000_000
    kafka.create_topic("eo-events", 6)
    kafka.create_topic("eo-counts", 6)
    assert produce_json(kafka, "eo-events", _events(count), key=lambda e: e["user"]) == count
    run = _run(chaos, kafka, "exactly_once", events="eo-events", counts="eo-counts", rate=PACE)

    final = anyio.run(_kill_twice_and_the_coordinator, run)

    assert final["state"] == "FINISHED", final["error"]
    assert final["restarts"] >= 2
    seen = _committed(kafka, "eo-counts")
    expected = _expected(count)
    missing = expected - seen
    extra = seen - expected
    assert (sum(missing.values()), sum(extra.values())) == (0, 0), (
        f"lost {sum(missing.values())} (e.g. {list(missing)[:3]}), "
        f"extra {sum(extra.values())} (e.g. {list(extra)[:3]})"
    )


def test_at_least_once_loses_nothing_through_the_same_kills(chaos: Any, kafka: Kafka) -> None:
    count = 1_000_000
    kafka.create_topic("alo-events", 6)
    kafka.create_topic("alo-counts", 6)
    assert produce_json(kafka, "alo-events", _events(count), key=lambda e: e["user"]) == count
    run = _run(chaos, kafka, "at_least_once", events="alo-events", counts="alo-counts", rate=PACE)

    final = anyio.run(_kill_twice_and_the_coordinator, run)

    assert final["state"] == "FINISHED", final["error"]
    seen = _committed(kafka, "alo-counts")
    expected = _expected(count)
    assert not expected - collections.Counter(set(seen)), "a count was lost"
    assert set(seen) == set(expected)  # repeats only: never a count that should not exist
    duplicates = sum(seen.values()) - len(expected)
    print(f"at_least_once: {duplicates} duplicates over {len(expected)} results")


@pytest.mark.timeout(300)
def test_the_partition_leader_killed_mid_run(chaos: Any, kafka_cluster: Kafka) -> None:
    count = 200_000
    kafka = kafka_cluster
    kafka.create_topic("ha-events", 6, replication=3, config={"min.insync.replicas": "2"})
    kafka.create_topic("ha-counts", 6, replication=3, config={"min.insync.replicas": "2"})
    assert produce_json(kafka, "ha-events", _events(count), key=lambda e: e["user"]) == count
    # Paced to about 5 s of input: unpaced, a fast machine reads it all within two
    # checkpoints, and the kill would come after the job finished.
    # A transaction caught by the kill may stay open until the brokers abort it: a short
    # transaction timeout bounds how long its commit can take before the job restarts.
    run = _run(
        chaos,
        kafka,
        "exactly_once",
        events="ha-events",
        counts="ha-counts",
        rate=40_000,
        txn_timeout_ms=20_000,
    )

    async def scenario() -> dict[str, Any]:
        await run.submit()
        await run.wait_running()
        checkpoint = await run.wait_checkpoint()
        await run.wait_checkpoint(after=checkpoint)
        leader = kafka.partition_leader("ha-counts", 0)
        run.note(f"kill -9 kafka node {leader}")
        kafka.node(leader).kill()
        status = await run.status()
        assert status["state"] not in FINAL, f"the job had ended before the kill: {status}"
        return await run.wait_final(timeout_s=300)

    final = anyio.run(scenario)

    assert final["state"] == "FINISHED", final["error"]
    seen = _committed(kafka, "ha-counts")
    assert seen == _expected(count)
