"""The job lifecycle the coordinator enforces (mesh/coordinator/jobs.py)."""

from __future__ import annotations

import itertools

import pytest

import mesh
from mesh import sinks, sources
from mesh.coordinator.jobs import TERMINAL, IllegalTransition, JobRecord, JobState, JobTable
from mesh.errors import MeshError
from mesh.graph.execution import build_execution_graph
from mesh.protocol.messages import SubmitJob

S = JobState

# The lifecycle from the module docstring.
ALLOWED = {
    (S.CREATED, S.SCHEDULING),
    (S.CREATED, S.FAILED),
    (S.CREATED, S.CANCELED),
    (S.SCHEDULING, S.RUNNING),
    (S.SCHEDULING, S.CANCELLING),
    (S.SCHEDULING, S.FAILED),
    (S.RUNNING, S.FINISHED),
    (S.RUNNING, S.CANCELLING),
    (S.RUNNING, S.FAILED),
    (S.SCHEDULING, S.RESTARTING),
    (S.RUNNING, S.RESTARTING),
    (S.RESTARTING, S.SCHEDULING),
    (S.RESTARTING, S.CANCELLING),
    (S.RESTARTING, S.CANCELED),
    (S.RESTARTING, S.FAILED),
    (S.CANCELLING, S.CANCELED),
    (S.CANCELLING, S.FAILED),
}

# How to reach each state from CREATED through allowed moves.
PATHS = {
    S.CREATED: [],
    S.SCHEDULING: [S.SCHEDULING],
    S.RUNNING: [S.SCHEDULING, S.RUNNING],
    S.RESTARTING: [S.SCHEDULING, S.RUNNING, S.RESTARTING],
    S.CANCELLING: [S.SCHEDULING, S.RUNNING, S.CANCELLING],
    S.FINISHED: [S.SCHEDULING, S.RUNNING, S.FINISHED],
    S.CANCELED: [S.SCHEDULING, S.CANCELLING, S.CANCELED],
    S.FAILED: [S.FAILED],
}


def _record(job_id: str = "job-42") -> JobRecord:
    job = mesh.Job("lifecycle", parallelism=2)
    job.source(sources.Collection([1, 2])).sink(sinks.Collect())
    graph = job.build().graph
    submission = SubmitJob(
        graph=graph.to_dict(),
        job_name="lifecycle",
        entry="job.py",
        build_args={},
        base_dir="/tmp",
        bundle=b"",
    )
    return JobRecord(
        job_id=job_id,
        submission=submission,
        graph=build_execution_graph(graph),
        created_ms=1_000,
    )


def _in_state(state: JobState) -> JobRecord:
    record = _record()
    for step in PATHS[state]:
        record.transition(step)
    assert record.state is state
    return record


def test_a_new_job_is_created() -> None:
    record = _record()
    assert record.state is S.CREATED
    assert not record.done
    assert record.name == "lifecycle"


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_allowed_transitions(old: JobState, new: JobState) -> None:
    record = _in_state(old)
    record.transition(new)
    assert record.state is new
    assert record.done is (new in TERMINAL)


ILLEGAL = sorted(set(itertools.product(S, S)) - ALLOWED)


@pytest.mark.parametrize(("old", "new"), ILLEGAL)
def test_illegal_transitions_name_both_states(old: JobState, new: JobState) -> None:
    record = _in_state(old)
    with pytest.raises(IllegalTransition) as info:
        record.transition(new)
    message = str(info.value)
    assert "job-42" in message
    assert f"from {old.value} to {new.value}" in message
    assert record.state is old, "a refused move leaves the state alone"


@pytest.mark.parametrize("final", sorted(TERMINAL))
def test_final_states_have_no_exits(final: JobState) -> None:
    record = _in_state(final)
    assert record.done
    for target in S:
        with pytest.raises(IllegalTransition):
            record.transition(target)
    assert record.state is final


def test_terminal_states() -> None:
    assert {S.FINISHED, S.CANCELED, S.FAILED} == TERMINAL


def test_no_state_moves_to_itself() -> None:
    for state in S:
        record = _in_state(state)
        with pytest.raises(IllegalTransition):
            record.transition(state)


def test_the_whole_happy_path() -> None:
    record = _record()
    for step in (S.SCHEDULING, S.RUNNING, S.FINISHED):
        record.transition(step)
    assert record.done
    assert record.summary(now_ms=5_000)["state"] == "FINISHED"


def test_job_table_finds_by_id_or_unique_prefix() -> None:
    table = JobTable()
    for job_id in ("abc123", "abd456", "xyz789"):
        table[job_id] = _record(job_id)
    assert table.find("abc123").job_id == "abc123"
    assert table.find("x").job_id == "xyz789"
    with pytest.raises(MeshError, match="prefix 'ab' is ambiguous: abc123, abd456"):
        table.find("ab")
    with pytest.raises(MeshError, match="no job 'q'"):
        table.find("q")
    assert table.new_id() not in table


def test_job_table_forgets_the_oldest_ended_jobs() -> None:
    table = JobTable()
    for n, state in enumerate([JobState.FINISHED, JobState.RUNNING, JobState.FAILED]):
        job = _record(f"job-{n}")
        job.state, job.ended_ms = state, n
        table[job.job_id] = job
    table.forget_ended(keep=1)
    assert sorted(table) == ["job-1", "job-2"]  # the running job always stays
