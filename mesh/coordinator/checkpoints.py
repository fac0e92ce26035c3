"""The checkpoint coordinator of one job: trigger, collect acks, complete or abort.

The flow (asynchronous barrier snapshots, coordinator side):

1. ``tick`` triggers checkpoint n when the timer says so (or ``take_savepoint`` asks):
   every node gets TRIGGER(n, directory) for its source subtasks and its subtasks whose
   input ended (ENDING: alive, with their final state, but they see no barriers); the
   others get barriers. A subtask whose input ends while n is under way, before it
   acknowledged, is triggered directly.
2. Every subtask acknowledges with the files it wrote (``on_ack``); a decline, a
   subtask that stops before acknowledging, or the timeout aborts the checkpoint.
3. Complete: ``_metadata.json`` is written by atomic rename, the checkpoint is recorded
   in the coordinator's database, checkpoints beyond the retained count are deleted,
   and every node is told (sinks commit). Savepoints are kept until deleted by people.

4. The end of a bounded job (``finish``): once every subtask's input ended, one last
   checkpoint is taken — it holds every sink's final pre-committed transaction — and
   only when it completed are the sinks told to commit their last output. A failure
   in the middle of those commits is then repaired by restoring that checkpoint (the
   commits are idempotent), never by producing the output again.

Checkpoint ids only grow (a job restored from checkpoint k continues at k+1), so a
transaction named after its checkpoint is never reused.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh import faults
from mesh.coordinator.checkpoint_traces import CheckpointTraces
from mesh.coordinator.pending import AckResult, PendingCheckpoint
from mesh.coordinator.store import CheckpointRecord, CheckpointStore
from mesh.coordinator.trigger import CheckpointPolicy, CheckpointTimer
from mesh.errors import StateError
from mesh.protocol.messages import (
    AckCheckpoint,
    CheckpointDone,
    DeclineCheckpoint,
    SnapshotFile,
    TriggerCheckpoint,
)
from mesh.protocol.states import SUBTASK_DONE, CheckpointKind, CheckpointOutcome, TaskState
from mesh.state.metadata import (
    METADATA_FILE,
    CheckpointMetadata,
    OperatorFiles,
    write_metadata,
)
from mesh.time.clock import Clock

__all__ = ["CheckpointManager", "JobView", "SavepointRequest"]

log = logging.getLogger("mesh.coordinator.checkpoints")

# A subtask takes part in a checkpoint while it runs, or when its input ended but it is
# still alive (it is triggered directly, since it sees no more barriers).
_TAKING_PART = frozenset({TaskState.RUNNING, TaskState.ENDING})


@dataclass(eq=False)
class SavepointRequest:
    """A savepoint someone asked for; ``done`` is called with (path, id) or an error."""

    directory: Path
    done: Callable[[str | None, int, str | None], None]  # (path, checkpoint id, error)
    checkpoint_id: int | None = None


@dataclass(eq=False)
class JobView:
    """What the manager needs to know about its job (kept current by the coordinator)."""

    job_id: str
    job_name: str
    subtasks: list[str]  # every "task.index"
    placement: dict[str, str]  # subtask -> node id
    nodes: list[str]  # every node running part of the job
    operator_parallelism: dict[str, tuple[int, int]]  # uid -> (parallelism, max_parallelism)
    states: dict[str, TaskState] = field(default_factory=dict)  # subtask -> last reported state


class CheckpointManager:
    """Checkpoints and savepoints of one running job attempt."""

    def __init__(
        self,
        *,
        job: JobView,
        attempt: int,
        policy: CheckpointPolicy,
        root: Path,
        store: CheckpointStore,
        clock: Clock,
        send: Callable[[str, Any], None],
        first_id: int = 1,
    ) -> None:
        self.job = job
        self.attempt = attempt
        self.policy = policy
        self.root = root  # <checkpoint dir>/<job id>
        self.store = store
        self.clock = clock
        self._send = send
        self._next_id = first_id
        self.timer = CheckpointTimer(policy, clock.monotonic_ms())
        self.pending: PendingCheckpoint | None = None
        self._savepoints: list[SavepointRequest] = []
        # The savepoint in flight, if the pending checkpoint is one.
        self._waiting_savepoint: SavepointRequest | None = None
        self.completed: list[CheckpointRecord] = [
            r for r in store.history(job.job_id) if r.state == CheckpointOutcome.COMPLETED
        ]
        self.last_failure: str | None = None
        # The alignment time of the latest checkpoint completed here: the longest of
        # its subtasks' (ms; None until one completes).
        self.latest_alignment_ms: float | None = None
        # Why the manager stopped (the job is ending); it triggers nothing more.
        self.stopped: str | None = None
        # Set by ``finish``: called once the final checkpoint completed.
        self._on_final: Callable[[], None] | None = None
        self._final_id: int | None = None
        # Called when failures exceed what the policy tolerates (the job fails).
        self.on_too_many_failures: Callable[[str], None] = lambda reason: None
        # Called with the next unused id after each trigger (persisted: ids are never
        # reused, even by a coordinator that restarts).
        self.on_next_id: Callable[[int], None] = lambda next_id: None
        self._traces = CheckpointTraces(job.job_id, job.job_name, attempt)

    @property
    def next_id(self) -> int:
        """The id the next checkpoint or savepoint gets."""
        return self._next_id

    # -- triggering -----------------------------------------------------------------------

    def _all_running(self) -> bool:
        """Every subtask can take part: it runs, or its input ended but it is still alive."""
        states = self.job.states
        return all(states.get(s) in _TAKING_PART for s in self.job.subtasks)

    def _why_no_savepoint(self) -> str | None:
        """Why no savepoint can be taken of this attempt (a subtask stopped), or None."""
        states = self.job.states
        for subtask in self.job.subtasks:
            state = states.get(subtask)
            if state in SUBTASK_DONE:
                return (
                    f"the job is ending: subtask {subtask} is {state}, "
                    "and a savepoint needs every subtask running"
                )
        return None

    def tick(self) -> None:
        """Trigger what is due, expire what took too long."""
        if self.stopped is not None:
            return
        now = self.clock.monotonic_ms()
        pending = self.pending
        if pending is not None and self.timer.expired(pending.started_ms, now):
            self._abort(pending, f"expired after {self.policy.timeout_ms} ms")
        if self._on_final is not None:
            if self.pending is None and self.timer.pause_over(now):
                self._final_id = self._trigger(
                    CheckpointKind.CHECKPOINT, self.root / f"chk-{self._next_id}"
                )
        elif self.pending is None and self._savepoints:
            self._trigger_savepoint()
        elif self.timer.due(now) and self._all_running():
            self._trigger(CheckpointKind.CHECKPOINT, self.root / f"chk-{self._next_id}")

    def finish(self, on_final: Callable[[], None]) -> None:
        """Every subtask's input ended: take a final checkpoint (after the one in flight,
        if any), then call ``on_final``. Savepoints are refused from now on."""
        if self.stopped is not None or self._on_final is not None:
            return
        self._on_final = on_final
        queued, self._savepoints = self._savepoints, []
        for request in queued:
            request.done(None, 0, "the job is finishing")
        self.tick()

    def _trigger(self, kind: CheckpointKind, directory: Path) -> int:
        checkpoint_id = self._next_id
        self._next_id += 1
        self.on_next_id(self._next_id)
        now = self.clock.monotonic_ms()
        self.pending = PendingCheckpoint(
            checkpoint_id=checkpoint_id,
            kind=kind,
            directory=str(directory),
            expected=frozenset(self.job.subtasks),
            started_ms=now,
            triggered_wall_ms=self.clock.now_ms(),
        )
        self.timer.triggered(now)
        trace_context = self._traces.begin(
            checkpoint_id, kind, str(directory), len(self.job.subtasks)
        )
        for node in self.job.nodes:
            self._send(
                node,
                TriggerCheckpoint(
                    job_id=self.job.job_id,
                    attempt=self.attempt,
                    checkpoint_id=checkpoint_id,
                    kind=kind,
                    directory=str(directory),
                    trace=trace_context,
                ),
            )
        log.debug("job %s: %s %d triggered", self.job.job_id, kind, checkpoint_id)
        return checkpoint_id

    def take_savepoint(self, request: SavepointRequest) -> None:
        """Take a savepoint as soon as every subtask runs and no checkpoint is in flight.

        A job that was just deployed is RUNNING before its subtasks all report running;
        a savepoint asked for then waits for them, as a checkpoint does. One asked for
        after a subtask stopped is refused at once.
        """
        if self.stopped is not None or self._on_final is not None:
            request.done(None, 0, f"the job is {self.stopped or 'finishing'}")
            return
        why = self._why_no_savepoint()
        if why is not None:
            request.done(None, 0, why)
            return
        self._savepoints.append(request)
        if self.pending is None:
            self._trigger_savepoint()

    def _trigger_savepoint(self) -> None:
        why = self._why_no_savepoint()
        if why is not None:
            queued, self._savepoints = self._savepoints, []
            for request in queued:
                request.done(None, 0, why)
            return
        if not self._all_running():
            return  # subtasks are still starting: ``tick`` tries again
        request = self._savepoints.pop(0)
        checkpoint_id = self._next_id
        directory = request.directory / f"savepoint-{self.job.job_id[:8]}-{checkpoint_id}"
        request.checkpoint_id = self._trigger(CheckpointKind.SAVEPOINT, directory)
        self._waiting_savepoint = request

    # -- acknowledgements -----------------------------------------------------------------

    def on_ack(self, msg: AckCheckpoint) -> None:
        """A subtask acknowledged."""
        pending = self.pending
        if pending is None or pending.checkpoint_id != msg.checkpoint_id:
            log.debug("job %s: late ack for checkpoint %d", self.job.job_id, msg.checkpoint_id)
            return
        result = pending.acknowledge(msg.subtask, msg)
        if result is not AckResult.SUCCESS:
            log.warning(
                "job %s: %s ack for checkpoint %d from %s",
                self.job.job_id,
                result.value,
                msg.checkpoint_id,
                msg.subtask,
            )
        if pending.fully_acknowledged:
            self._complete(pending)

    def on_decline(self, msg: DeclineCheckpoint) -> None:
        """A subtask declined."""
        pending = self.pending
        if pending is not None and pending.checkpoint_id == msg.checkpoint_id:
            self._abort(pending, f"declined by {msg.subtask}: {msg.reason}")

    def on_subtask_state(self, subtask: str, state: TaskState) -> None:
        """A subtask changed state.

        One whose input ended before it acknowledged will see no barrier: it is triggered
        directly. One that stopped before acknowledging aborts the checkpoint.
        """
        self.job.states[subtask] = state
        pending = self.pending
        if pending is None and self._savepoints and self.stopped is None:
            self._trigger_savepoint()  # one waited for the subtasks to start (or stops now)
            return
        if pending is None or subtask not in pending.expected or subtask in pending.acks:
            return
        if state == TaskState.ENDING:
            self._send(
                self.job.placement[subtask],
                TriggerCheckpoint(
                    job_id=self.job.job_id,
                    attempt=self.attempt,
                    checkpoint_id=pending.checkpoint_id,
                    kind=pending.kind,
                    directory=pending.directory,
                    subtasks=[subtask],
                    trace=self._traces.context(pending.checkpoint_id),
                ),
            )
        elif state != TaskState.RUNNING:
            self._abort(pending, f"subtask {subtask} stopped ({state}) before acknowledging")

    # -- completion -----------------------------------------------------------------------

    def _complete(self, pending: PendingCheckpoint) -> None:
        directory = Path(pending.directory)
        operators: dict[str, list[SnapshotFile]] = {}
        for ack in pending.acks.values():
            for f in ack.files:
                operators.setdefault(f.uid, []).append(f)
        metadata = CheckpointMetadata(
            job_id=self.job.job_id,
            job_name=self.job.job_name,
            checkpoint_id=pending.checkpoint_id,
            kind=pending.kind,
            created_ms=self.clock.now_ms(),
            operators={
                uid: OperatorFiles(
                    parallelism=self.job.operator_parallelism[uid][0],
                    max_parallelism=self.job.operator_parallelism[uid][1],
                    files=tuple(sorted(files, key=lambda f: f.subtask)),
                )
                for uid, files in sorted(operators.items())
            },
        )
        try:
            write_metadata(directory, metadata)
        except OSError as exc:
            self._abort(pending, f"cannot write {directory}/_metadata.json: {exc}")
            return
        now = self.clock.monotonic_ms()
        record = CheckpointRecord(
            job_id=self.job.job_id,
            checkpoint_id=pending.checkpoint_id,
            kind=pending.kind,
            state=CheckpointOutcome.COMPLETED,
            path=str(directory),
            triggered_ms=pending.triggered_wall_ms,
            ended_ms=self.clock.now_ms(),
            duration_ms=round(now - pending.started_ms),
            size_bytes=metadata.size,
            alignment_ms=round(
                max((a.alignment_ms for a in pending.acks.values()), default=0.0), 1
            ),
            trace_id=self._traces.trace_id(pending.checkpoint_id),
        )
        try:
            self.store.record(record)
        except StateError as exc:
            # Not recorded, not complete: a restore must not find it either.
            (directory / METADATA_FILE).unlink(missing_ok=True)
            self._abort(pending, str(exc))
            return
        pending.complete()
        trace_context = self._traces.completed(pending.checkpoint_id, record.size_bytes)
        self.completed.append(record)
        self.latest_alignment_ms = max(
            (ack.alignment_ms for ack in pending.acks.values()), default=0.0
        )
        self.pending = None
        self.timer.completed(now)
        self.last_failure = None
        self._retain()
        faults.reach("checkpoint.recorded")
        self._tell_nodes(pending.checkpoint_id, completed=True, trace=trace_context)
        log.info(
            "job %s: %s %d completed in %d ms (%d bytes)",
            self.job.job_id,
            pending.kind,
            pending.checkpoint_id,
            record.duration_ms,
            record.size_bytes,
        )
        if pending.kind == CheckpointKind.SAVEPOINT and self._waiting_savepoint is not None:
            request, self._waiting_savepoint = self._waiting_savepoint, None
            request.done(str(directory), pending.checkpoint_id, None)
        if self._on_final is not None:
            if pending.checkpoint_id == self._final_id:
                on_final, self._on_final = self._on_final, None
                self.shutdown("finishing")
                on_final()
            else:
                self.tick()  # the checkpoint before the final one: take the final now
        elif self._savepoints:
            self._trigger_savepoint()

    def _tell_nodes(
        self, checkpoint_id: int, *, completed: bool, trace: dict[str, str] | None = None
    ) -> None:
        done = CheckpointDone(
            job_id=self.job.job_id,
            attempt=self.attempt,
            checkpoint_id=checkpoint_id,
            completed=completed,
            trace=trace,
        )
        for node in self.job.nodes:
            self._send(node, done)

    def _retain(self) -> None:
        checkpoints = [r for r in self.completed if r.kind == CheckpointKind.CHECKPOINT]
        for old in checkpoints[: max(0, len(checkpoints) - self.policy.retained)]:
            shutil.rmtree(old.path, ignore_errors=True)
            self.completed.remove(old)
            try:
                self.store.mark_discarded(old.job_id, old.checkpoint_id)
            except StateError as exc:
                log.warning("job %s: %s", self.job.job_id, exc)
        # Directories of aborted checkpoints that a slow subtask wrote into after the
        # abort removed them: older than the newest completed, never completed.
        kept = {Path(r.path).name for r in self.completed}
        newest = checkpoints[-1].checkpoint_id if checkpoints else 0
        for path in self.root.glob("chk-*"):
            number = path.name[len("chk-") :]
            if number.isdigit() and int(number) < newest and path.name not in kept:
                shutil.rmtree(path, ignore_errors=True)

    def shutdown(self, reason: str) -> None:
        """The job is ending (its input ended, or it is cancelled or failed): trigger
        nothing more, and give up what is in flight without counting it as a failure.

        ``reason`` completes "the job is ...", e.g. "finishing".
        """
        if self.stopped is not None:
            return
        self.stopped = reason
        queued, self._savepoints = self._savepoints, []
        for request in queued:
            request.done(None, 0, f"the job is {reason}")
        if self.pending is not None:
            self._abort(self.pending, f"the job is {reason}", failure=False)

    def _abort(self, pending: PendingCheckpoint, reason: str, *, failure: bool = True) -> None:
        if not pending.discard(reason):
            return
        trace_id = self._traces.trace_id(pending.checkpoint_id)
        self._traces.aborted(pending.checkpoint_id, reason, failure=failure)
        self.pending = None
        now = self.clock.monotonic_ms()
        if failure:
            self.last_failure = f"{pending.kind} {pending.checkpoint_id}: {reason}"
        log.log(
            logging.WARNING if failure else logging.INFO,
            "job %s: %s %d aborted: %s",
            self.job.job_id,
            pending.kind,
            pending.checkpoint_id,
            reason,
        )
        try:
            self.store.record(
                CheckpointRecord(
                    job_id=self.job.job_id,
                    checkpoint_id=pending.checkpoint_id,
                    kind=pending.kind,
                    state=CheckpointOutcome.FAILED if failure else CheckpointOutcome.ABORTED,
                    path=pending.directory,
                    triggered_ms=pending.triggered_wall_ms,
                    ended_ms=self.clock.now_ms(),
                    duration_ms=round(now - pending.started_ms),
                    size_bytes=0,
                    reason=reason,
                    trace_id=trace_id,
                )
            )
        except StateError as exc:  # the history misses a row; the abort goes on
            log.warning("job %s: %s", self.job.job_id, exc)
        shutil.rmtree(pending.directory, ignore_errors=True)
        self._tell_nodes(pending.checkpoint_id, completed=False)
        if pending.kind == CheckpointKind.SAVEPOINT or not failure:
            # A failed savepoint, or one given up because the job ends, is not a
            # checkpoint failure.
            self.timer.in_flight = False
            if pending.kind == CheckpointKind.SAVEPOINT and self._waiting_savepoint is not None:
                request, self._waiting_savepoint = self._waiting_savepoint, None
                request.done(None, pending.checkpoint_id, reason)
        elif self.timer.failed(now):
            self.on_too_many_failures(
                f"{self.timer.consecutive_failures} checkpoints in a row failed; the last: {reason}"
            )
            return
        if self._savepoints:
            self._trigger_savepoint()

    def summary(self) -> dict[str, Any]:
        """For ``mesh status``."""
        latest = self.completed[-1] if self.completed else None
        return {
            "interval_ms": self.policy.interval_ms,
            "in_flight": self.pending.checkpoint_id if self.pending else None,
            "completed": len(self.completed),
            "latest": latest.to_dict() if latest else None,
            "last_failure": self.last_failure,
        }
