"""Peek: a live sample of the records a task emits, for a person watching the dashboard.

Off unless asked. Each ask (an HTTP request for the task's samples) opens or renews a
lease; while it holds, the nodes running the task's subtasks send back at most
``max_per_second`` of its records a second, shared between its subtasks. The hub keeps
the last ``_KEPT`` samples in memory for the page to fetch and drops anything over the
rate; nothing is written anywhere. A lease nobody renews ends, and so does the sampling.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.outbound import ControlOut
from mesh.graph.execution import SubtaskRef
from mesh.protocol.messages import PeekSamples, PeekTask
from mesh.transport.drops import DropCounter

__all__ = ["LEASE_MS", "MAX_PER_SECOND", "PeekHub"]

log = logging.getLogger("mesh.coordinator.peek")

#: How long one ask keeps sampling on.
LEASE_MS = 10_000
# How often the nodes are asked again while someone looks: a node ignores an ask that
# comes before its subtasks started, so the first may be lost.
_RENEW_MS = 2_000
#: The most records a second anyone may peek at, per task.
MAX_PER_SECOND = 100
# Samples kept per task for the page to fetch.
_KEPT = 200


@dataclass
class _Session:
    """One task being peeked at."""

    attempt: int
    max_per_second: int
    until_ms: float  # monotonic: when the lease ends
    asked_ms: float = -math.inf  # monotonic: when the nodes were last asked
    samples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_KEPT))
    next_seq: int = 1
    window_ms: float = 0.0  # the start of the current one-second window
    in_window: int = 0  # samples taken in it


class PeekHub:
    """Open peeks, by (job id, task id)."""

    def __init__(self, *, jobs: JobTable, out: ControlOut, drops: DropCounter) -> None:
        self._jobs = jobs
        self._out = out
        self._drops = drops
        self._sessions: dict[tuple[str, int], _Session] = {}

    def ask(
        self, job: JobRecord, task: int, *, after: int, max_per_second: int, now_ms: float
    ) -> dict[str, Any]:
        """Open or renew the peek at ``task`` of ``job``; the samples after ``after``."""
        rate = max(1, min(max_per_second, MAX_PER_SECOND))
        key = (job.job_id, task)
        session = self._sessions.get(key)
        if session is None or session.attempt != job.attempt:
            session = _Session(attempt=job.attempt, max_per_second=rate, until_ms=0.0)
            self._sessions[key] = session
        session.until_ms = now_ms + LEASE_MS
        if rate != session.max_per_second or now_ms - session.asked_ms >= _RENEW_MS:
            session.max_per_second = rate
            session.asked_ms = now_ms
            self._tell_nodes(job, task, rate, LEASE_MS)
        return {
            "job_id": job.job_id,
            "task": task,
            "max_per_second": session.max_per_second,
            "lease_ms": round(session.until_ms - now_ms),
            "next": session.next_seq - 1,
            "records": [s for s in session.samples if s["seq"] > after],
        }

    def _tell_nodes(self, job: JobRecord, task: int, rate: int, lease_ms: int) -> None:
        parallelism = next(t.parallelism for t in job.graph.job.tasks if t.id == task)
        per_subtask = max(1, math.ceil(rate / parallelism))
        nodes = {a.node_id for a in job.assignments if SubtaskRef.parse(a.subtask).task == task}
        for node in sorted(nodes):
            self._out.to_node(
                node,
                PeekTask(
                    job_id=job.job_id,
                    attempt=job.attempt,
                    task=task,
                    max_per_second=per_subtask,
                    lease_ms=lease_ms,
                ),
            )

    def on_samples(self, msg: PeekSamples, now_ms: float, wall_ms: int) -> None:
        """Samples from a node: kept up to the rate while the peek is open."""
        try:
            task = SubtaskRef.parse(msg.subtask).task
        except ValueError:
            self._drops.drop("malformed", f"peek samples name no subtask: {msg.subtask!r}")
            return
        session = self._sessions.get((msg.job_id, task))
        if session is None or session.attempt != msg.attempt or now_ms > session.until_ms:
            return  # a peek that ended: its last samples are not wanted
        try:
            records = orjson.loads(msg.records)
        except orjson.JSONDecodeError as exc:
            self._drops.drop("malformed", f"peek samples of {msg.subtask} are not JSON: {exc}")
            return
        if not isinstance(records, list):
            self._drops.drop("malformed", f"peek samples of {msg.subtask} are not a list")
            return
        if now_ms - session.window_ms >= 1000:
            session.window_ms, session.in_window = now_ms, 0
        for value in records[: max(0, session.max_per_second - session.in_window)]:
            session.samples.append(
                {
                    "seq": session.next_seq,
                    "subtask": msg.subtask,
                    "time_ms": wall_ms,
                    "value": value,
                }
            )
            session.next_seq += 1
            session.in_window += 1

    def expire(self, now_ms: float) -> None:
        """Forget peeks nobody renewed, and peeks of jobs that are gone or over."""
        for key, session in list(self._sessions.items()):
            job = self._jobs.get(key[0])
            if now_ms > session.until_ms or job is None or job.done:
                del self._sessions[key]

    def stop(self, job: JobRecord, task: int) -> None:
        """End a peek now (the page closed it)."""
        if self._sessions.pop((job.job_id, task), None) is not None:
            self._tell_nodes(job, task, 1, 0)
