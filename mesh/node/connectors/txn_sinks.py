"""Exactly-once sinks: two-phase commit driven by checkpoints.

Theory of operation (Flink's TwoPhaseCommitSinkFunction):

* Records go into the *current transaction* (an in-progress file, staging rows).
* At checkpoint barrier n the sink *pre-commits* it: flushed, fsynced, and renamed to
  a name fixed by ``(job, sink uid, subtask, n)``; the pre-commit is recorded in the
  checkpoint's state. A new transaction starts with the next record.
* When checkpoint n completes (NOTIFY_COMPLETE), every pre-committed transaction up to n
  is *committed*: made visible. Committing is idempotent (renaming a file that is
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

import itertools
import os
import re
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from mesh.api import sinks
from mesh.errors import GraphError, StateError
from mesh.graph.logical import OperatorSpec
from mesh.node.connectors.writers import SinkOperator
from mesh.node.operators.base import RestoredState
from mesh.node.operators.context import TaskContext
from mesh.node.operators.records import encode_lines
from mesh.state.files import fsync_dir
from mesh.telemetry.tracing import traced_step, tracer

__all__ = ["JsonLinesSink", "TransactionalSink", "transaction_pattern"]

_FINAL = "end"
_TRACER = tracer("mesh.node.sinks")


class TransactionalSink(SinkOperator):
    """The checkpoint-driven transaction bookkeeping shared by exactly-once sinks."""

    def __init__(self, spec: OperatorSpec, ctx: TaskContext) -> None:
        super().__init__(spec)
        self.ctx = ctx
        # Pre-committed transactions not known to be committed, oldest first.
        self.pending: list[dict[str, Any]] = []
        self._seq = itertools.count()

    @property
    def stateful(self) -> bool:
        return True

    @property
    def _owner(self) -> str:
        """``<job>-<sink uid>-<subtask>``: the prefix of this subtask's transactions."""
        return f"{self.ctx.job_id}-{self.spec.uid}-{self.ctx.subtask_index}"

    def _txn_name(self, checkpoint: int | str) -> str:
        txn = f"{checkpoint:06d}" if isinstance(checkpoint, int) else checkpoint
        return f"{self._owner}-{txn}"

    def _current_name(self) -> str:
        """A name for a new current transaction (unique in this attempt)."""
        return f"{self._owner}-a{self.ctx.attempt}-{next(self._seq)}"

    # -- what each sink implements ---------------------------------------------------------

    def _has_current(self) -> bool:
        raise NotImplementedError

    def _precommit(self, txn: str, checkpoint: int | str) -> dict[str, Any]:
        """Make the current transaction durable under ``txn``; returns its state entry."""
        raise NotImplementedError

    def _commit(self, entry: dict[str, Any]) -> None:
        """Make a pre-committed transaction visible (idempotent)."""
        raise NotImplementedError

    def _abort_current(self) -> None:
        """Drop the current transaction."""
        raise NotImplementedError

    def _clean_up(self, old_job: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        """Delete what job ``old_job`` left uncommitted (only subtask ``subtask``'s, unless
        None), except the entries in ``keep``."""
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------

    async def initialize(self, restored: RestoredState | None) -> None:
        job, index = self.ctx.job_id, self.ctx.subtask_index
        if restored is None:
            if self.ctx.attempt > 0:  # a failover before the first checkpoint
                self._clean_up(job, [], index)
            return
        mine = restored.operator_state.get("pending", [])
        for entry in mine:
            self._commit(entry)
        everyone = restored.all_operator_state.get("pending", [])
        for old_job in sorted({e["job"] for e in everyone} | {restored.job_id, job}):
            if old_job == job:
                if self.ctx.attempt > 0 or restored.job_id == job:
                    self._clean_up(job, everyone, index)
            elif index == 0:
                self._clean_up(old_job, everyone, None)

    def snapshot_state(self, checkpoint_id: int) -> dict[str, list[Any]]:
        if self._has_current():
            with traced_step(_TRACER, "pre-commit", self._span_attributes(checkpoint_id)):
                entry = self._precommit(self._txn_name(checkpoint_id), checkpoint_id)
            entry["checkpoint"] = checkpoint_id
            entry["job"] = self.ctx.job_id
            self.pending.append(entry)
        return {"pending": [dict(e) for e in self.pending]}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        errors = []
        still = []
        for entry in self.pending:
            if entry["checkpoint"] != _FINAL and entry["checkpoint"] <= checkpoint_id:
                try:
                    with traced_step(_TRACER, "commit", self._span_attributes(entry["checkpoint"])):
                        self._commit(entry)
                except Exception as exc:  # commit the rest, then fail (it is retried)
                    errors.append(exc)
                    still.append(entry)
            else:
                still.append(entry)
        self.pending = still
        if errors:
            raise StateError(f"sink {self.spec.uid!r}: commit failed: {errors[0]}") from errors[0]

    def _span_attributes(self, checkpoint_id: int) -> dict[str, Any]:
        return {
            "mesh.operator.uid": self.spec.uid,
            "mesh.subtask.index": self.ctx.subtask_index,
            "mesh.checkpoint.id": checkpoint_id,
        }

    def end_of_input(self) -> bool:
        if self._has_current():
            entry = self._precommit(self._txn_name(_FINAL), _FINAL)
            entry["checkpoint"] = _FINAL
            entry["job"] = self.ctx.job_id
            self.pending.append(entry)
        return bool(self.pending)

    def commit_final(self) -> None:
        for entry in self.pending:
            self._commit(entry)
        self.pending = []

    def commit_all(self) -> None:
        self.end_of_input()
        self.commit_final()

    def abort(self) -> None:
        self._abort_current()


class JsonLinesSink(TransactionalSink):
    """``sinks.JsonLines``: part files that appear (renamed, fsynced) when committed."""

    def __init__(self, spec: OperatorSpec, sink: sinks.JsonLines, ctx: TaskContext) -> None:
        super().__init__(spec, ctx)
        self.directory = ctx.resolve(sink.directory)
        self._file: Any = None
        self._path: Path | None = None

    def _prefix(self, job: str) -> str:
        return f"part-{job}-{self.spec.uid}-"

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraphError(
                f"sink {self.spec.uid!r}: cannot write to {self.directory}: {exc}"
            ) from None

    def process(self, batch: list[Any]) -> list[Any]:
        if self._file is None:
            self._path = self.directory / f".part-{self._current_name()}.inprogress"
            try:
                self._file = open(self._path, "wb")  # noqa: SIM115 - closed by precommit/abort
            except OSError as exc:
                raise StateError(
                    f"sink {self.spec.uid!r}: cannot create {self._path}: {exc}"
                ) from None
        self._file.write(encode_lines(self.spec, batch))
        return []

    def _has_current(self) -> bool:
        return self._file is not None

    def _precommit(self, txn: str, checkpoint: int | str) -> dict[str, Any]:
        # If any step fails (a full disk), the transaction stays current: the checkpoint
        # is declined and the next one pre-commits the same file again.
        assert self._file is not None and self._path is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        pending = self.directory / f".part-{txn}-a{self.ctx.attempt}.pending"
        os.replace(self._path, pending)
        try:
            fsync_dir(self.directory)  # the rename is part of what the checkpoint relies on
        except OSError:
            os.replace(pending, self._path)  # still current (the open file moves with it)
            raise
        self._file.close()
        self._file = None
        self._path = None
        return {"pending": str(pending), "final": str(self.directory / f"part-{txn}.jsonl")}

    def _commit(self, entry: dict[str, Any]) -> None:
        pending, final = Path(entry["pending"]), Path(entry["final"])
        if pending.exists():
            os.replace(pending, final)
            fsync_dir(final.parent)
        elif not final.exists():
            raise StateError(
                f"sink {self.spec.uid!r}: transaction file {pending} is gone and {final} was "
                "never written: its records are lost"
            )

    def _abort_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def _clean_up(self, old_job: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        kept = {Path(e["pending"]).name for e in keep}
        ours = transaction_pattern(
            old_job,
            self.spec.uid,
            r"-a\d+-\d+\.inprogress",
            r"-(?:\d+|end)-a\d+\.pending",
            subtask=subtask,
        )
        for path in self.directory.glob(f".part-{glob_escape(old_job)}-*"):
            if path.name not in kept and ours.match(path.name[len(".part-") :]):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self._abort_current()


def transaction_pattern(
    job: str, uid: str, *tails: str, subtask: int | None = None
) -> re.Pattern[str]:
    """Names of transactions of sink ``uid`` of job ``job``: ``<job>-<uid>-<subtask><tail>``
    (of any subtask, or only of ``subtask``).

    Anchored on both ends, so a sink whose uid extends this one's (``out`` and
    ``out-2``) never matches.
    """
    alternatives = "|".join(tails)
    index = r"\d+" if subtask is None else str(subtask)
    return re.compile(rf"^{re.escape(job)}-{re.escape(uid)}-{index}(?:{alternatives})$")
