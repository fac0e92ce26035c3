"""Chaos: a node stopped with SIGTERM leaves the cluster gracefully.

The node tells the coordinator it is leaving (NodeLeaving); the coordinator removes it
and fails its jobs over at once, from their latest completed checkpoint, onto the slots
that remain. The heartbeat timeout here is far longer than the failover deadline, so
only the graceful path can explain a quick failover. No replacement node is started.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio
import pytest

from tests.chaos.harness import ChaosRun, SeqJob, assert_exact

pytestmark = pytest.mark.slow

NODES, SLOTS = 3, 2
HEARTBEAT_TIMEOUT_S = 30
FAILOVER_DEADLINE_S = 15.0  # well below the heartbeat timeout


def test_a_node_stopped_with_sigterm_leaves_and_its_job_fails_over_at_once(
    chaos: Any,
) -> None:
    run: ChaosRun = chaos(
        SeqJob(n=2500),
        nodes=NODES,
        slots=SLOTS,
        heartbeat_timeout=f"{HEARTBEAT_TIMEOUT_S}s",
        seed=3,
    )

    async def scenario() -> tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]], float]:
        await run.submit()
        status = await run.wait_running()
        # The job fits on what remains once one node has left.
        assert status["slots"]["total"] <= (NODES - 1) * SLOTS, status["slots"]
        checkpoint = await run.wait_checkpoint()
        await run.wait_checkpoint(after=checkpoint)
        victim = run.node(run.random.choice(run.nodes_of(status)))
        sent = time.monotonic()
        run.kill(victim, signal.SIGTERM)
        # No replacement: the job goes on on the remaining slots, long before the
        # heartbeat timeout could have noticed anything.
        failed_over = await run.wait_running(attempt_above=0, timeout_s=FAILOVER_DEADLINE_S)
        failover_s = time.monotonic() - sent
        run.note(f"attempt {failed_over['attempt']} running after {failover_s:.2f} s")
        assert await run.wait_exit(victim) == 0
        print(f"{victim.name} exited with 0 at most {time.monotonic() - sent:.2f} s after SIGTERM")
        nodes = await run.request(lambda c: c.nodes())
        return victim.name, failed_over, await run.wait_final(), nodes, failover_s

    victim, failed_over, final, nodes, failover_s = anyio.run(scenario)
    print(f"failover (SIGTERM -> attempt 1 running): {failover_s:.2f} s")

    assert failed_over["attempt"] == 1 and failed_over["restarts"] == 1
    error = failed_over["failures"][-1]["error"]
    assert f"node {victim} " in error and "left the cluster" in error, error
    assert "stopped (SIGTERM)" in error and "no heartbeat" not in error, error
    assert victim not in run.nodes_of(failed_over)
    assert failover_s < FAILOVER_DEADLINE_S < HEARTBEAT_TIMEOUT_S
    assert sorted(n["node_id"] for n in nodes) == sorted(
        d.name for d in run.cluster.nodes if d.name != victim
    )
    # The victim said so, and the coordinator heard it.
    assert "leaving the cluster: stopped (SIGTERM)" in run.node(victim).log_tail(400)
    assert run.cluster.coordinator is not None
    assert f"node {victim} left the cluster" in run.cluster.coordinator.log_tail(400)

    assert final["attempt"] == 1  # one failover, nothing else went wrong
    assert_exact(run, final)
    # Restored from a checkpoint, not from the start.
    assert final["restored_from"] is not None and "chk-" in final["restored_from"]


def test_a_node_running_nothing_of_the_job_leaves_without_a_restart(
    chaos: Any,
) -> None:
    run: ChaosRun = chaos(
        SeqJob(n=1500), nodes=NODES, slots=SLOTS, heartbeat_timeout=f"{HEARTBEAT_TIMEOUT_S}s"
    )

    async def scenario() -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        await run.submit()
        status = await run.wait_running()
        await run.wait_checkpoint()
        idle = [d for d in run.cluster.nodes if d.name not in run.nodes_of(status)]
        assert idle, run.nodes_of(status)  # spread: 2 slots on 2 of the 3 nodes
        run.kill(idle[0], signal.SIGTERM)
        assert await run.wait_exit(idle[0]) == 0
        nodes = await run.request(lambda c: c.nodes())
        return idle[0].name, nodes, await run.wait_final()

    idle, nodes, final = anyio.run(scenario)
    assert idle not in {n["node_id"] for n in nodes}
    assert len(nodes) == NODES - 1
    # The job did not notice.
    assert (final["attempt"], final["restarts"], final["failures"]) == (0, 0, [])
    assert_exact(run, final)
