"""A job as the coordinator tracks it: its lifecycle and what its subtasks report.

Job states, and the only moves between them (anything else is a bug and raises an
error naming the job and both states):

    CREATED ──> SCHEDULING ──> RUNNING ──> FINISHED
                  ▲    │          │
                  │    └──────────┴──> RESTARTING   (a failure the strategy allows)
                  └────────────────────────┘

    SCHEDULING, RUNNING, RESTARTING ──> CANCELLING ──> CANCELED (also on timeout)
    CREATED, RESTARTING ──> CANCELED
    any state that is not final ──> FAILED

SCHEDULING covers placing the subtasks and deploying them; RUNNING starts when every
node has its subtasks ready. RESTARTING covers a failover: the failed attempt's subtasks
are cancelled, the restart delay passes, enough slots are found, and the job goes back
to SCHEDULING as the next attempt. FINISHED, CANCELED and FAILED are final.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Any

from mesh.coordinator.checkpoints import CheckpointManager
from mesh.coordinator.jobstore import StoredJob
from mesh.coordinator.restart import RestartTracker
from mesh.errors import MeshError
from mesh.graph.execution import ExecutionGraph, build_execution_graph
from mesh.graph.logical import LogicalGraph
from mesh.protocol.messages import (
    RestoreSpec,
    SubmitJob,
    SubtaskMetrics,
    TaskAssignment,
)
from mesh.protocol.states import FINAL_JOB_STATES, SUBTASK_DONE, JobState, TaskState

__all__ = [
    "FAILURE_CAUSES",
    "TERMINAL",
    "IllegalTransition",
    "JobRecord",
    "JobState",
    "JobTable",
    "SubtaskRate",
]


TERMINAL = FINAL_JOB_STATES

_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.CREATED: frozenset({JobState.SCHEDULING, JobState.FAILED, JobState.CANCELED}),
    JobState.SCHEDULING: frozenset(
        {JobState.RUNNING, JobState.RESTARTING, JobState.CANCELLING, JobState.FAILED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.FINISHED, JobState.RESTARTING, JobState.CANCELLING, JobState.FAILED}
    ),
    JobState.RESTARTING: frozenset(
        {JobState.SCHEDULING, JobState.CANCELLING, JobState.CANCELED, JobState.FAILED}
    ),
    JobState.CANCELLING: frozenset({JobState.CANCELED, JobState.FAILED}),
    JobState.FINISHED: frozenset(),
    JobState.CANCELED: frozenset(),
    JobState.FAILED: frozenset(),
}


_FAILURES_KEPT = 8

#: What a recorded failure was: a subtask raised, a node stopped a subtask by itself, a
#: node was lost or left, too many checkpoints failed, or anything else.
FAILURE_CAUSES = (
    "task_exception",
    "task_stopped",
    "node_lost",
    "node_left",
    "checkpoints",
    "error",
)


class IllegalTransition(RuntimeError):
    """A job was asked to move between states that are not connected."""


@dataclass
class SubtaskRate:
    """Records per second in and out of one subtask, and the share of time it waited for
    output credit (its backpressure ratio, 0..1), from its last two reports."""

    at_ms: float = 0.0
    records_in: int = 0
    records_out: int = 0
    backpressure_ms: float = 0.0  # the cumulative wait at ``at_ms``
    in_rate: float = 0.0
    out_rate: float = 0.0
    backpressure_ratio: float = 0.0


@dataclass(eq=False)
class JobRecord:
    """Everything the coordinator knows about one job."""

    job_id: str
    submission: SubmitJob
    graph: ExecutionGraph
    created_ms: int  # wall clock
    state: JobState = JobState.CREATED
    attempt: int = 0
    started_ms: int = 0
    ended_ms: int = 0
    error: str | None = None
    assignments: list[TaskAssignment] = field(default_factory=list)
    deploy_pending: set[str] = field(default_factory=set)  # nodes yet to confirm deploy
    metrics: dict[str, SubtaskMetrics] = field(default_factory=dict)  # by "task.index"
    rates: dict[str, SubtaskRate] = field(default_factory=dict)
    collected: list[bytes] = field(default_factory=list)  # encoded record lists
    cancel_deadline_ms: float = 0.0
    restore: RestoreSpec | None = None  # where the current attempt started from
    restore_path: str | None = None  # the savepoint or checkpoint the job was submitted with
    next_checkpoint_id: int = 1  # ids are never reused, across attempts and restarts
    checkpoint_root: str = ""  # <checkpoint dir>/<job id>
    checkpoints: CheckpointManager | None = None  # stopped when the attempt ends
    final_commit_sent: bool = False
    # Failover.
    restarts: RestartTracker = field(default_factory=lambda: RestartTracker({"kind": "none"}))
    failures: list[dict[str, Any]] = field(default_factory=list)  # newest last, a few kept
    restart_at_ms: float = 0.0  # monotonic: when the restart delay is over
    slot_deadline_ms: float | None = None  # monotonic: when waiting for slots gives up
    waiting: str | None = None  # why the job waits for slots (the scheduler's explanation)
    redeploying: bool = False  # the next attempt's restore point is being read

    @property
    def name(self) -> str:
        """The job's name."""
        return self.graph.logical.config.name

    @property
    def nodes(self) -> set[str]:
        """Nodes running part of the job."""
        return {a.node_id for a in self.assignments}

    def transition(self, new: JobState) -> None:
        """Move to ``new``; raises IllegalTransition if the lifecycle does not allow it."""
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"job {self.job_id}: cannot go from {self.state} to {new}")
        self.state = new

    @property
    def done(self) -> bool:
        """Whether the job reached a final state."""
        return self.state in TERMINAL

    def __post_init__(self) -> None:
        # Every subtask's "task.index", computed once.
        self._subtask_keys = [str(s) for s in self.graph.subtasks()]

    def all_subtasks(self, states: frozenset[TaskState]) -> bool:
        """Whether every subtask reported one of ``states``."""
        metrics = self.metrics
        return all(
            (m := metrics.get(s)) is not None and m.state in states for s in self._subtask_keys
        )

    @classmethod
    def from_stored(cls, row: StoredJob) -> JobRecord:
        """A job read back from the coordinator's database (raises GraphError if its
        graph is unreadable)."""
        graph = LogicalGraph.from_dict(row.submission.graph)
        job = cls(
            job_id=row.job_id,
            submission=row.submission,
            graph=build_execution_graph(graph),
            created_ms=row.created_ms,
            state=JobState(row.state),
            attempt=row.attempt,
            started_ms=row.started_ms,
            ended_ms=row.ended_ms,
            error=row.error,
            restore_path=row.restore_path,
            next_checkpoint_id=row.next_checkpoint_id,
            checkpoint_root=row.checkpoint_root,
        )
        job.restarts = RestartTracker(graph.config.restart)
        job.restarts.restarts = row.restarts
        return job

    def stored(self) -> StoredJob:
        """The row the coordinator's database keeps for this job."""
        return StoredJob(
            job_id=self.job_id,
            state=self.state.value,
            attempt=self.attempt,
            created_ms=self.created_ms,
            started_ms=self.started_ms,
            ended_ms=self.ended_ms,
            error=self.error,
            checkpoint_root=self.checkpoint_root,
            next_checkpoint_id=self.next_checkpoint_id,
            restore_path=self.restore_path,
            restarts=self.restarts.restarts,
            submission=self.submission,
        )

    def mark_lost(self, node_id: str) -> None:
        """Every subtask on ``node_id`` is gone with its node."""
        for a in self.assignments:
            if a.node_id != node_id:
                continue
            m = self.metrics.get(a.subtask)
            if m is None:
                self.metrics[a.subtask] = SubtaskMetrics(subtask=a.subtask, state=TaskState.LOST)
            elif m.state not in SUBTASK_DONE:
                self.metrics[a.subtask] = dataclasses.replace(m, state=TaskState.LOST)

    def new_attempt(self) -> None:
        """Forget the failed attempt's placement and progress; the attempt number goes up."""
        self.attempt += 1
        self.assignments = []
        self.metrics.clear()
        self.rates.clear()
        self.deploy_pending = set()
        self.final_commit_sent = False
        self.checkpoints = None
        self.slot_deadline_ms = None
        self.waiting = None

    def record_failure(self, error: str, now_ms: int, cause: str = "error") -> None:
        """Keep a failure for ``mesh status`` and the dashboard (the last few); ``cause``
        is one of ``FAILURE_CAUSES``."""
        self.failures.append(
            {"time_ms": now_ms, "attempt": self.attempt, "cause": cause, "error": error}
        )
        del self.failures[:-_FAILURES_KEPT]

    def subtasks_done(self) -> bool:
        """Whether every subtask ended (finished, failed or cancelled)."""
        return self.all_subtasks(SUBTASK_DONE)

    def update_metrics(
        self, metrics: SubtaskMetrics, now_ms: float, *, from_heartbeat: bool
    ) -> None:
        """Take a subtask's counters; a heartbeat never overrides a final state."""
        current = self.metrics.get(metrics.subtask)
        if from_heartbeat and current is not None and current.state in SUBTASK_DONE:
            return
        self.metrics[metrics.subtask] = metrics
        rate = self.rates.get(metrics.subtask)
        if rate is None:  # the first report: rates are measured from here
            rate = self.rates[metrics.subtask] = SubtaskRate(
                at_ms=now_ms,
                records_in=metrics.records_in,
                records_out=metrics.records_out,
                backpressure_ms=metrics.backpressure_ms,
            )
        elapsed = now_ms - rate.at_ms
        if elapsed >= 250:
            rate.in_rate = (metrics.records_in - rate.records_in) * 1000.0 / elapsed
            rate.out_rate = (metrics.records_out - rate.records_out) * 1000.0 / elapsed
            waited = metrics.backpressure_ms - rate.backpressure_ms
            rate.backpressure_ratio = min(1.0, max(0.0, waited / elapsed))
            rate.at_ms, rate.records_in, rate.records_out, rate.backpressure_ms = (
                now_ms,
                metrics.records_in,
                metrics.records_out,
                metrics.backpressure_ms,
            )
        if metrics.state in SUBTASK_DONE:
            rate.in_rate = rate.out_rate = rate.backpressure_ratio = 0.0

    def summary(self, now_ms: int) -> dict[str, Any]:
        """One line of ``mesh list``."""
        end = self.ended_ms or now_ms
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state.value,
            "created_ms": self.created_ms,
            "uptime_ms": max(0, end - (self.started_ms or self.created_ms)),
        }


class JobTable(dict[str, JobRecord]):
    """The coordinator's jobs by id."""

    def new_id(self) -> str:
        """A fresh random job id."""
        while True:
            job_id = secrets.token_hex(8)
            if job_id not in self:
                return job_id

    def find(self, job_id: str) -> JobRecord:
        """The job with this id, or with this unique id prefix."""
        job = self.get(job_id)
        if job is not None:
            return job
        matches = sorted(j for j in self if j.startswith(job_id)) if job_id else []
        if len(matches) == 1:
            return self[matches[0]]
        if matches:
            raise MeshError(f"job id prefix {job_id!r} is ambiguous: {', '.join(matches)}")
        raise MeshError(f"no job {job_id!r} (see mesh list)")

    def forget_ended(self, *, keep: int) -> list[str]:
        """Drop the oldest ended jobs beyond the ``keep`` most recent; returns their ids."""
        ended = sorted((j for j in self.values() if j.done), key=lambda j: j.ended_ms)
        dropped = [job.job_id for job in ended[: max(0, len(ended) - keep)]]
        for job_id in dropped:
            del self[job_id]
        return dropped
