"""Restart strategies as the coordinator applies them (time is just numbers here)."""

from __future__ import annotations

from mesh import RestartStrategy
from mesh.coordinator.restart import RestartTracker


def tracker(strategy: RestartStrategy) -> RestartTracker:
    return RestartTracker(strategy.to_dict())


def test_none_gives_up_at_once() -> None:
    t = tracker(RestartStrategy.none())
    assert t.on_failure(0) is None
    assert t.restarts == 0
    assert "does not restart" in t.gave_up()


def test_fixed_delay_allows_exactly_its_attempts() -> None:
    t = tracker(RestartStrategy.fixed_delay(3, "2s"))
    assert [t.on_failure(i * 10_000) for i in range(4)] == [2000, 2000, 2000, None]
    assert t.restarts == 3
    assert "all 3 restarts used" in t.gave_up()


def test_exponential_grows_caps_and_resets_after_a_quiet_run() -> None:
    t = tracker(RestartStrategy.exponential("1s", "5s", 2.0, reset_after="1m"))
    delays = [t.on_failure(now) for now in (0, 1_000, 2_000, 3_000, 4_000)]
    assert delays == [1000, 2000, 4000, 5000, 5000]  # never gives up, capped at max
    assert t.on_failure(4_000 + 60_000) == 1000  # a minute without failures: start over
    assert t.on_failure(4_000 + 61_000) == 2000


def test_failure_rate_counts_failures_within_the_interval() -> None:
    t = tracker(RestartStrategy.failure_rate(2, interval="10s", delay="500ms"))
    assert t.on_failure(0) == 500
    assert t.on_failure(1_000) == 500
    assert t.on_failure(2_000) is None  # a third failure within 10 s
    # Failures that fell out of the window no longer count.
    t = tracker(RestartStrategy.failure_rate(2, interval="10s", delay="500ms"))
    assert [t.on_failure(now) for now in (0, 6_000, 12_000, 18_000)] == [500, 500, 500, 500]
    assert "more than 2 failures within 10000 ms" in t.gave_up()


def test_strategies_survive_the_job_graph_round_trip() -> None:
    for strategy in (
        RestartStrategy.none(),
        RestartStrategy.fixed_delay(5, "1s"),
        RestartStrategy.exponential(),
        RestartStrategy.failure_rate(3, "1m", "2s"),
    ):
        assert RestartStrategy.from_dict(strategy.to_dict()) == strategy


def test_a_failed_attempt_is_forgotten_by_the_next_one() -> None:
    import mesh
    from mesh.coordinator.jobs import JobRecord
    from mesh.graph.execution import build_execution_graph
    from mesh.protocol.messages import SubmitJob, TaskAssignment

    job = mesh.Job("j", parallelism=2)
    job.source(mesh.sources.Collection([1])).rebalance().map(str).sink(mesh.sinks.Collect())
    graph = job.build().graph
    record = JobRecord(
        job_id="j1",
        submission=SubmitJob(graph.to_dict(), "j", "job.py", {}, "/tmp", b""),
        graph=build_execution_graph(graph),
        created_ms=0,
    )
    record.assignments = [
        TaskAssignment(subtask=s, node_id=n, slot=0)
        for s, n in (("0.0", "a"), ("0.1", "b"), ("1.0", "a"), ("1.1", "b"))
    ]
    record.mark_lost("b")
    assert {k: m.state for k, m in record.metrics.items()} == {"0.1": "LOST", "1.1": "LOST"}
    assert not record.subtasks_done()  # node a's subtasks still run
    record.new_attempt()
    assert (record.attempt, record.assignments, record.metrics) == (1, [], {})
