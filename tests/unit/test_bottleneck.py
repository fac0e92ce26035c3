"""The likely bottleneck in ``mesh status`` (mesh/coordinator/bottleneck.py), from made-up
status data; the backpressure ratio the coordinator derives from successive reports; the
one line ``mesh status`` prints."""

from __future__ import annotations

from typing import Any

import mesh
from mesh import sinks, sources
from mesh.client.render import format_status
from mesh.coordinator.bottleneck import find_bottleneck
from mesh.coordinator.jobs import JobRecord, JobState
from mesh.coordinator.views import job_status
from mesh.graph.execution import build_execution_graph
from mesh.protocol.messages import SubmitJob, SubtaskMetrics
from mesh.protocol.states import TaskState


def task(task_id: int, name: str, ratios: list[float], state: str = "RUNNING") -> dict[str, Any]:
    return {
        "id": task_id,
        "name": name,
        "parallelism": len(ratios),
        "subtasks": [
            {
                "subtask": f"{task_id}.{i}",
                "index": i,
                "node": f"node-{i + 1}",
                "state": state,
                "backpressure_ratio": ratio,
            }
            for i, ratio in enumerate(ratios)
        ],
    }


def edge(source: int, target: int, partitioning: str = "hash") -> dict[str, Any]:
    return {"source": source, "target": target, "partitioning": partitioning}


def test_the_first_subtask_below_backpressured_ones_is_named() -> None:
    # source waits, parse waits, enrich does not: enrich holds everything back
    tasks = [
        task(0, "source", [0.9, 0.8]),
        task(1, "parse", [0.7, 0.9]),
        task(2, "enrich", [0.0, 0.02]),
    ]
    found = find_bottleneck(tasks, [edge(0, 1), edge(1, 2)])
    assert found is not None
    assert (found["task"], found["subtask"], found["node"]) == (2, "2.0", "node-1")
    assert found["upstream"] == "1.1" and found["upstream_backpressure_ratio"] == 0.9
    assert found["reason"] == (
        "its input is backpressured (parse [1] waits 90% of the time for output room), "
        "its output is not (0%)"
    )


def test_no_backpressure_no_bottleneck() -> None:
    tasks = [task(0, "source", [0.05, 0.3]), task(1, "sink", [0.0, 0.0])]
    assert find_bottleneck(tasks, [edge(0, 1)]) is None


def test_a_subtask_that_is_itself_backpressured_is_not_the_cause() -> None:
    tasks = [task(0, "source", [0.9]), task(1, "middle", [0.3])]  # between OK and HIGH
    assert find_bottleneck(tasks, [edge(0, 1)]) is None


def test_forward_edges_feed_only_the_subtask_with_the_same_index() -> None:
    tasks = [task(0, "source", [0.0, 0.95]), task(1, "sink", [0.0, 0.0])]
    found = find_bottleneck(tasks, [edge(0, 1, "forward")])
    assert found is not None and found["subtask"] == "1.1"
    # through a hash edge both sink subtasks are fed by the waiting source: lowest index
    found = find_bottleneck(tasks, [edge(0, 1, "hash")])
    assert found is not None and found["subtask"] == "1.0"


def test_the_candidate_whose_upstream_waits_most_wins() -> None:
    tasks = [
        task(0, "a", [0.6]),
        task(1, "b", [0.99]),
        task(2, "slow-a", [0.0]),
        task(3, "slow-b", [0.0]),
    ]
    found = find_bottleneck(tasks, [edge(0, 2), edge(1, 3)])
    assert found is not None and found["name"] == "slow-b"


def test_a_sink_waiting_for_its_destination_is_the_bottleneck() -> None:
    # everything waits, the sink too: what the sink writes to is not keeping up
    tasks = [task(0, "source", [0.9, 0.9]), task(1, "map -> Sink: ZmqPush", [0.4, 0.97])]
    found = find_bottleneck(tasks, [edge(0, 1)])
    assert found is not None
    assert (found["subtask"], found["upstream"], found["backpressure_ratio"]) == ("1.1", None, 0.97)
    assert found["reason"] == (
        "it ends the pipeline and waits 97% of the time for its sink's destination: "
        "what it writes to is not keeping up"
    )
    # a task with outputs that waits is a victim, not a cause
    tasks.append(task(2, "after", [0.05, 0.05]))
    found = find_bottleneck(tasks, [edge(0, 1), edge(1, 2)])
    assert found is not None and found["subtask"] == "2.0"


def test_a_starved_sibling_of_a_blocked_sink_is_not_the_cause() -> None:
    """A source feeds two branches and one branch's sink is blocked: the source waits,
    and the other branch, with nothing to read, must not be named in the sink's place."""
    tasks = [
        task(0, "source", [1.0, 1.0]),
        task(1, "clicks", [0.0, 0.0]),  # fed by the source, starved
        task(2, "totals", [1.0, 1.0]),  # its sink waits for its destination
    ]
    for sub in tasks[1]["subtasks"]:
        sub["input_fill"] = 0.0
    for sub in tasks[2]["subtasks"]:
        sub["input_fill"] = 1.0
    found = find_bottleneck(tasks, [edge(0, 1, "forward"), edge(0, 2)])
    assert found is not None and (found["task"], found["upstream"]) == (2, None)
    assert "not keeping up" in found["reason"]
    # With full input buffers the same subtask is slow, not starved: it is the cause.
    for sub in tasks[1]["subtasks"]:
        sub["input_fill"] = 0.9
    tasks[2] = task(2, "totals", [0.0, 0.0])
    for sub in tasks[2]["subtasks"]:
        sub["input_fill"] = 0.0
    found = find_bottleneck(tasks, [edge(0, 1, "forward"), edge(0, 2)])
    assert found is not None and found["task"] == 1


def test_finished_subtasks_are_not_candidates() -> None:
    tasks = [task(0, "source", [0.9]), task(1, "sink", [0.0], state="FINISHED")]
    assert find_bottleneck(tasks, [edge(0, 1)]) is None


def _record() -> JobRecord:
    job = mesh.Job("bp", parallelism=1)
    job.source(sources.Collection([1, 2])).rebalance().map(lambda r: r).sink(sinks.Collect())
    graph = job.build().graph
    submission = SubmitJob(
        graph=graph.to_dict(),
        job_name="bp",
        entry="job.py",
        build_args={},
        base_dir="/tmp",
        bundle=b"",
    )
    return JobRecord(
        job_id="job-1", submission=submission, graph=build_execution_graph(graph), created_ms=0
    )


def _report(record: JobRecord, subtask: str, at_ms: float, backpressure_ms: float) -> None:
    record.update_metrics(
        SubtaskMetrics(subtask=subtask, state=TaskState.RUNNING, backpressure_ms=backpressure_ms),
        at_ms,
        from_heartbeat=True,
    )


def test_the_coordinator_derives_a_recent_ratio_from_successive_reports() -> None:
    record = _record()
    record.transition(JobState.SCHEDULING)
    record.transition(JobState.RUNNING)
    _report(record, "0.0", 10_000, 50_000)  # waited long before: not counted
    _report(record, "1.0", 10_000, 0)
    _report(record, "0.0", 11_000, 50_800)  # 800 ms of the last 1000
    _report(record, "1.0", 11_000, 10)
    status = job_status(record, now_ms=11_000)
    ratios = {s["subtask"]: s["backpressure_ratio"] for t in status["tasks"] for s in t["subtasks"]}
    assert ratios == {"0.0": 0.8, "1.0": 0.01}
    assert status["bottleneck"]["subtask"] == "1.0"
    assert (
        "backpressure: likely bottleneck Map -> Sink: Collect [0] (subtask 1.0) — its input"
        in format_status(status)
    )
    _report(record, "0.0", 12_000, 50_820)  # the pressure is gone
    assert job_status(record, now_ms=12_000)["bottleneck"] is None
