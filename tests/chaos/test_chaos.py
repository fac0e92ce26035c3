"""Chaos: real daemons killed mid-stream; the committed output must equal the reference.

Every scenario runs the sequence job (tests/jobs/seqcheck.py) with checkpoints every
200 ms and an exactly-once sink on a cluster of subprocesses, injects its faults, waits
for the job to finish and checks every (key, seq) is committed exactly once with no
alerts from the keyed checker. These are the short, seeded variants CI runs; the long
ones are ``python bench/chaos.py`` (see its docstring).
"""

from __future__ import annotations

import signal
from typing import Any

import anyio
import pytest

from tests.chaos.harness import SeqJob, assert_exact

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sink", ["jsonlines", "sqlite"])
def test_a_node_killed_right_after_a_checkpoint_three_times(chaos: Any, sink: str) -> None:
    run = chaos(SeqJob(n=2500, sink=sink), nodes=3, seed=1)

    async def scenario() -> dict[str, Any]:
        await run.submit()
        status = await run.wait_running()
        for round_ in range(3):
            checkpoint = await run.wait_checkpoint()
            # Right after it completed: kill a node running part of the job.
            checkpoint = await run.wait_checkpoint(after=checkpoint)
            victim = run.random.choice(run.nodes_of(status))
            run.kill(run.node(victim))
            run.add_node()  # a replacement, so the cluster keeps its slots
            status = await run.wait_running(attempt_above=status["attempt"])
            assert status["attempt"] == round_ + 1
            assert status["restarts"] == round_ + 1
            assert victim in status["failures"][-1]["error"]
        return await run.wait_final()

    final = anyio.run(scenario)
    assert_exact(run, final)
    # Restored from checkpoints, never from the start.
    assert final["restored_from"] is not None and "chk-" in final["restored_from"]


def test_a_node_killed_while_writing_a_snapshot(chaos: Any) -> None:
    run = chaos(
        SeqJob(n=1500, backend="sqlite"),
        nodes=3,
        node_env={"node-2": {"MESH_FAULTS": "snapshot.writing=4"}},
    )

    async def scenario() -> dict[str, Any]:
        await run.submit()
        first = await run.wait_running()
        assert "node-2" in run.nodes_of(first)
        # node-2 dies by itself in the middle of its 4th snapshot write.
        assert await run.wait_exit(run.node("node-2")) == -signal.SIGKILL
        status = await run.wait_running(attempt_above=0)
        assert "node node-2" in status["failures"][-1]["error"]
        assert "node-2" not in run.nodes_of(status)
        return await run.wait_final()

    final = anyio.run(scenario)
    assert_exact(run, final)


def test_the_coordinator_killed_twice(chaos: Any) -> None:
    run = chaos(
        SeqJob(n=2000),
        nodes=2,
        # The 3rd checkpoint: complete and recorded, no node told to commit yet.
        coordinator_env={"MESH_FAULTS": "checkpoint.recorded=3"},
    )

    async def scenario() -> dict[str, Any]:
        await run.submit()
        await run.wait_running()
        assert run.cluster.coordinator is not None
        # The fault point kills it.
        assert await run.wait_exit(run.cluster.coordinator) == -signal.SIGKILL
        run.restart_coordinator()
        status = await run.wait_running(attempt_above=0)
        assert status["restarts"] == 0  # a coordinator restart is not a job failure
        checkpoint = await run.wait_checkpoint()
        assert checkpoint >= 3  # the one recorded before the crash counts, ids go on
        await run.wait_checkpoint(after=checkpoint)
        assert run.cluster.coordinator is not None
        run.kill(run.cluster.coordinator)
        run.restart_coordinator()
        await run.wait_running(attempt_above=status["attempt"])
        return await run.wait_final()

    final = anyio.run(scenario)
    assert_exact(run, final)
    history = anyio.run(run.checkpoints)
    ids = [c["checkpoint_id"] for c in history]
    assert ids == sorted(set(ids))  # never reused across restarts


def test_a_node_cut_off_longer_than_the_heartbeat_timeout(chaos: Any) -> None:
    run = chaos(SeqJob(n=2000), nodes=3)

    async def scenario() -> dict[str, Any]:
        await run.submit()
        status = await run.wait_running()
        await run.wait_checkpoint()
        victim = run.node(run.nodes_of(status)[-1])
        run.kill(victim, signal.SIGSTOP)
        try:
            status = await run.wait_running(attempt_above=0)
            assert "no heartbeat" in status["failures"][-1]["error"]
        finally:
            run.kill(victim, signal.SIGCONT)
        # It wakes, stops what it still ran of attempt 0, and registers again.
        await run.wait_nodes(3)
        return await run.wait_final()

    final = anyio.run(scenario)
    assert_exact(run, final)


POISON = "3:700,5:1,7:1500"  # (key, seq): early, first of its key, last of its key


def test_poison_records_become_dead_letters_exactly_once(chaos: Any) -> None:
    run = chaos(SeqJob(n=1500, poison=POISON, on_error="dead_letter"), nodes=3)

    async def scenario() -> dict[str, Any]:
        await run.submit()
        status = await run.wait_running()

        def dead_letters_in(s: dict[str, Any]) -> int:
            task = next(t for t in s["tasks"] if t["operators"][0]["uid"] == "dead-letters")
            return int(task["subtasks"][0]["records_in"])

        # As soon as a dead letter arrived (maybe not committed yet): the replay makes
        # it again, and it must still be written once.
        await run.wait(lambda s: dead_letters_in(s) >= 1, "a dead letter")
        run.kill(run.node(run.nodes_of(status)[-1]))
        run.add_node()
        await run.wait_running(attempt_above=0)
        return await run.wait_final()

    final = anyio.run(scenario)
    assert final["state"] == "FINISHED", final["error"]
    poisoned = frozenset({(3, 700), (5, 1), (7, 1500)})
    verdict = run.verdict(skipped=poisoned)
    assert (verdict.lost, verdict.duplicates, verdict.alerts) == (0, 0, [])
    letters = verdict.dead_letters
    assert sorted((d["record"]["key"], d["record"]["seq"]) for d in letters) == sorted(poisoned)
    for letter in letters:
        assert letter["operator"] == "gate"
        assert "ValueError: poison record" in letter["traceback"]
        assert "in gate" in letter["traceback"]  # the user's frame is in it
    sink_task = next(t for t in final["tasks"] if t["operators"][0]["uid"] == "dead-letters")
    # Counts are per attempt: the last one saw at least the two late poison records.
    assert sink_task["subtasks"][0]["records_in"] >= 2


def test_a_poison_record_fails_the_job_once_restarts_are_used_up(chaos: Any) -> None:
    run = chaos(SeqJob(n=1500, poison="4:300", restarts=2, restart_delay="50ms"), nodes=2)

    async def scenario() -> dict[str, Any]:
        await run.submit()
        return await run.wait_final()

    final = anyio.run(scenario)
    assert final["state"] == "FAILED"
    assert final["restarts"] == 2 and final["attempt"] == 2
    error = final["error"]
    assert error.startswith("restart strategy fixed_delay(attempts=2, delay_ms=50): all 2 restarts")
    # The root cause: the operator, the subtask, the record and the user's traceback.
    assert "operator 'gate'" in error and "subtask" in error
    assert "{'key': 4, 'seq': 300}" in error
    assert 'raise ValueError(f"poison record {record}")' in error
    assert len(final["failures"]) == 3
    # Nothing after the last completed checkpoint was committed twice or lost.
    verdict = run.verdict()
    assert verdict.duplicates == 0 and verdict.alerts == []


def test_nodes_that_lose_the_coordinator_stop_their_subtasks(chaos: Any) -> None:
    run = chaos(SeqJob(n=2000), nodes=2)

    async def scenario() -> dict[str, Any]:
        await run.submit()
        await run.wait_running()
        await run.wait_checkpoint()
        coordinator = run.cluster.coordinator
        assert coordinator is not None
        run.kill(coordinator, signal.SIGSTOP)
        try:
            # Each node stops the job on its own once the coordinator is silent for
            # longer than the heartbeat timeout (1 s here).
            await run.wait_logged("no word from the coordinator", run.cluster.nodes)
        finally:
            run.kill(coordinator, signal.SIGCONT)
        await run.wait_running(attempt_above=0)
        return await run.wait_final()

    final = anyio.run(scenario)
    assert_exact(run, final)


def test_a_restart_waits_for_slots_and_gives_up_after_the_slot_timeout(chaos: Any) -> None:
    run = chaos(SeqJob(n=1500), nodes=1, coordinator_env={"MESH_SLOT_TIMEOUT": "4s"})

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        await run.submit()
        await run.wait_running()
        await run.wait_checkpoint()
        run.kill(run.node("node-1"))  # the only node: nowhere to restart
        waiting = await run.wait(lambda s: s["state"] == "RESTARTING", "RESTARTING")
        run.add_node()  # a node joins in time: the job goes on there
        await run.wait_running(attempt_above=0)
        first = await run.wait_final()
        return waiting, first

    waiting, final = anyio.run(scenario)
    assert waiting["attempt"] == 0 and "node node-1" in waiting["failures"][-1]["error"]
    assert_exact(run, final)

    async def nobody_comes() -> dict[str, Any]:
        await run.submit()
        await run.wait_running()
        run.kill(run.node("node-2"))
        status: dict[str, Any] = await run.wait_final()
        return status

    failed = anyio.run(nobody_comes)
    assert failed["state"] == "FAILED"
    assert "no slots within 4000 ms" in failed["error"]
    assert "needs 2 slot(s)" in failed["error"]
