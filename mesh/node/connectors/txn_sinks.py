"""Exactly-once sinks: a ``SinkWriter`` and its ``Committer`` (``mesh.connectors``) driven
by checkpoints, and the built-in JsonLines one.

Theory of operation (Flink's TwoPhaseCommitSinkFunction):

* Records go into the writer's *current transaction* (an in-progress file, staging rows,
  a buffer of Kafka records).
* At checkpoint barrier n the writer *pre-commits* it (``prepare_commit``): flushed,
  fsynced, renamed to a name fixed by ``(job, sink uid, subtask, n)``; the committable
  it returns is recorded in the checkpoint's state. A new transaction starts with the
  next record.
* When checkpoint n completes (NOTIFY_COMPLETE), every pre-committed transaction up to n
  is *committed* by the committer, in order, in a task of the subtask (a commit may
  take a while: a Kafka transaction). Committing is idempotent (renaming a file that is
  already there, or a transaction id already recorded, does nothing), so a commit that
  is retried after a failure never duplicates output.
* Restoring a checkpoint commits the transactions it lists (they may or may not have
  been committed before the failure) and deletes what the restored-from job left
  uncommitted (written after that checkpoint: it will be produced again). After a
  failover (the same job, a new attempt) each subtask deletes only its own leftovers,
  before it writes anything: its siblings may already be writing, and a sibling's
  cleanup must not take their new files. A new job started from a savepoint has its own
  file names, so one subtask cleans up after every old subtask.
* At the end of a bounded input the last transaction is pre-committed and committed
  when every subtask of the job has ended (``commit_final``): a failure before that
  leaves it invisible, and the restored job produces it again.
"""

from __future__ import annotations

import os
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import anyio

from mesh.api import sinks
from mesh.connectors.base import Committer, SinkWriter
from mesh.connectors.transactions import TransactionNames, transaction_pattern
from mesh.errors import GraphError, StateError
from mesh.graph.logical import OperatorSpec
from mesh.node.connectors.writers import SinkOperator
from mesh.node.operators.base import RestoredState
from mesh.node.operators.context import TaskContext
from mesh.node.operators.records import encode_lines
from mesh.state.files import fsync_dir
from mesh.telemetry.tracing import captured_context, traced_step, tracer, within_context

__all__ = [
    "JsonLinesCommitter",
    "JsonLinesWriter",
    "TransactionNames",
    "TwoPhaseSink",
    "transaction_pattern",
]

_FINAL = "end"
_TRACER = tracer("mesh.node.sinks")


class TwoPhaseSink(SinkOperator):
    """The checkpoint-driven transaction bookkeeping of every exactly-once sink."""

    def __init__(
        self, spec: OperatorSpec, ctx: TaskContext, writer: SinkWriter, committer: Committer
    ) -> None:
        super().__init__(spec, writer)
        self.ctx = ctx
        self.committer = committer
        self.names = TransactionNames(ctx, spec.uid)
        # Pre-committed transactions not known to be committed, oldest first.
        self.pending: list[dict[str, Any]] = []
        # The newest checkpoint known complete, and a wake-up for the committing task.
        self._complete = -1
        self._due = anyio.Event()
        # Commits one at a time, in order (the committing task, the final commit).
        self._committing = anyio.Lock()
        # The trace context each completion arrived in: its commits join that trace.
        self._contexts: dict[int, Any] = {}

    @property
    def stateful(self) -> bool:
        return True

    # -- lifecycle ------------------------------------------------------------------------

    async def initialize(self, restored: RestoredState | None) -> None:
        await self.writer.open()
        await self.committer.open()
        job, index = self.ctx.job_id, self.ctx.subtask_index
        if restored is None:
            if self.ctx.attempt > 0:  # a failover before the first checkpoint
                await self.committer.clean_up(job, [], index)
            return
        mine = restored.operator_state.get("pending", [])
        for entry in mine:
            await self._commit(entry)
        everyone = restored.all_operator_state.get("pending", [])
        for old_job in sorted({e["job"] for e in everyone} | {restored.job_id, job}):
            if old_job == job:
                if self.ctx.attempt > 0 or restored.job_id == job:
                    await self.committer.clean_up(job, everyone, index)
            elif index == 0:
                await self.committer.clean_up(old_job, everyone, None)

    def _precommit(self, checkpoint: int | str) -> None:
        committable = self.writer.prepare_commit(self.names.precommitted(checkpoint))
        if committable is not None:
            entry = dict(committable)
            entry["checkpoint"] = checkpoint
            entry["job"] = self.ctx.job_id
            self.pending.append(entry)

    def snapshot_state(self, checkpoint_id: int) -> dict[str, list[Any]]:
        with traced_step(_TRACER, "pre-commit", self._span_attributes(checkpoint_id)):
            self._precommit(checkpoint_id)
        return {"pending": [dict(e) for e in self.pending]}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        if checkpoint_id > self._complete:
            self._complete = checkpoint_id
            self._contexts[checkpoint_id] = captured_context()
            self._due.set()

    async def run_commits(self) -> None:
        while True:
            await self._due.wait()
            self._due = anyio.Event()
            await self.commit_due()

    async def commit_due(self) -> None:
        """Commit every pre-committed transaction of a completed checkpoint, strictly in
        order: the first that fails stops the rest (a committer may rely on transaction n
        being committed before n + 1, as Kafka's commit marker does), and the subtask
        fails; the restarted job commits it and the rest again."""
        async with self._committing:
            for entry in list(self.pending):
                checkpoint = entry["checkpoint"]
                if checkpoint == _FINAL or checkpoint > self._complete:
                    break
                # In the trace of the completion that made it due.
                made_due = min((c for c in self._contexts if c >= checkpoint), default=None)
                context = self._contexts.get(made_due) if made_due is not None else None
                try:
                    with (
                        within_context(context),
                        traced_step(_TRACER, "commit", self._span_attributes(checkpoint)),
                    ):
                        await self._commit(entry)
                except Exception as exc:
                    raise StateError(f"sink {self.spec.uid!r}: commit failed: {exc}") from exc
                self.pending.remove(entry)
            for done in [c for c in self._contexts if c <= self._complete]:
                del self._contexts[done]  # everything they made due is committed

    async def _commit(self, entry: dict[str, Any]) -> None:
        await self.committer.commit(entry)

    def _span_attributes(self, checkpoint_id: int) -> dict[str, Any]:
        return {
            "mesh.operator.uid": self.spec.uid,
            "mesh.subtask.index": self.ctx.subtask_index,
            "mesh.checkpoint.id": checkpoint_id,
        }

    async def end_of_input(self) -> bool:
        await self.writer.flush()
        self._precommit(_FINAL)
        return bool(self.pending)

    async def commit_final(self) -> None:
        async with self._committing:
            for entry in list(self.pending):
                await self._commit(entry)
                self.pending.remove(entry)
        self.writer.finish()

    async def commit_all(self) -> None:
        await self.end_of_input()
        await self.commit_final()

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.committer.close()


class JsonLinesWriter(SinkWriter):
    """``sinks.JsonLines``: an in-progress file per transaction, renamed at pre-commit."""

    def __init__(self, spec: OperatorSpec, sink: sinks.JsonLines, ctx: TaskContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.directory = ctx.resolve(sink.directory)
        self.names = TransactionNames(ctx, spec.uid)
        self._file: Any = None
        self._path: Path | None = None

    async def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraphError(
                f"sink {self.spec.uid!r}: cannot write to {self.directory}: {exc}"
            ) from None

    def write(self, records: list[Any]) -> None:
        if self._file is None:
            self._path = self.directory / f".part-{self.names.current()}.inprogress"
            try:
                self._file = open(self._path, "wb")  # noqa: SIM115 - closed by precommit/abort
            except OSError as exc:
                raise StateError(
                    f"sink {self.spec.uid!r}: cannot create {self._path}: {exc}"
                ) from None
        self._file.write(encode_lines(self.spec, records))

    def prepare_commit(self, transaction: str) -> dict[str, Any] | None:
        # If any step fails (a full disk), the transaction stays current: the checkpoint
        # is declined and the next one pre-commits the same file again.
        if self._file is None or self._path is None:
            return None
        self._file.flush()
        os.fsync(self._file.fileno())
        pending = self.directory / f".part-{transaction}-a{self.ctx.attempt}.pending"
        os.replace(self._path, pending)
        try:
            fsync_dir(self.directory)  # the rename is part of what the checkpoint relies on
        except OSError:
            os.replace(pending, self._path)  # still current (the open file moves with it)
            raise
        self._file.close()
        self._file = None
        self._path = None
        return {"pending": str(pending), "final": str(self.directory / f"part-{transaction}.jsonl")}

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def close(self) -> None:
        self.abort()


class JsonLinesCommitter(Committer):
    """``sinks.JsonLines``: a pre-committed file is renamed to its final name."""

    def __init__(self, spec: OperatorSpec, sink: sinks.JsonLines, ctx: TaskContext) -> None:
        self.spec = spec
        self.directory = ctx.resolve(sink.directory)

    async def commit(self, committable: dict[str, Any]) -> None:
        # A rename and two fsyncs: off the event loop.
        await anyio.to_thread.run_sync(self._commit, committable)

    def _commit(self, committable: dict[str, Any]) -> None:
        pending, final = Path(committable["pending"]), Path(committable["final"])
        if pending.exists():
            os.replace(pending, final)
            fsync_dir(final.parent)
        elif not final.exists():
            raise StateError(
                f"sink {self.spec.uid!r}: transaction file {pending} is gone and {final} was "
                "never written: its records are lost"
            )

    async def clean_up(self, job_id: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        kept = {Path(e["pending"]).name for e in keep}
        ours = transaction_pattern(
            job_id,
            self.spec.uid,
            r"-a\d+-\d+\.inprogress",
            r"-(?:\d+|end)-a\d+\.pending",
            subtask=subtask,
        )
        for path in self.directory.glob(f".part-{glob_escape(job_id)}-*"):
            if path.name not in kept and ours.match(path.name[len(".part-") :]):
                path.unlink(missing_ok=True)
