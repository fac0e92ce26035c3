"""The base classes of every source and sink (the public connector API).

A connector has two halves. The *description* (``Source``, ``Sink``) is what a job file
builds: plain settings, checked when it is made, pickled into the job bundle. On the node,
each subtask asks the description for its runtime half: a ``SourceReader``, or a
``SinkWriter`` and (for exactly-once sinks) a ``Committer``.

Sources are read in *splits*: pieces of the input that are read independently (a range
of a file, a Kafka partition). A split is a JSON object that also holds where reading
got to; the reader hands its splits back at every checkpoint, and after a failure, or at
another parallelism, the splits are dealt out again, so every record is read exactly
once (when the source can rewind: ``replayable``).

Exactly-once sinks commit in two phases, tied to checkpoints. At checkpoint ``n``'s
barrier the writer seals what it wrote since the last barrier into a *committable* (a
JSON object saying what to make visible: a file to rename, a batch of records to send in
one transaction) that becomes part of checkpoint ``n``. When checkpoint ``n`` completes,
the committer makes it visible. A committer must be idempotent: after a failure, a
committable may be committed again. mesh keeps the committables in the checkpoint and
commits them in order, so the connector never needs its own bookkeeping of what is
pending.

``docs/connectors.md`` walks through writing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.connectors.context import TaskContext
from mesh.errors import UndecodableInput

__all__ = [
    "Committer",
    "RestoredSplits",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceReader",
    "Split",
]

#: A piece of a source's input and where reading it got to: a JSON object.
Split = dict[str, Any]


class Source:
    """Base of every source description (what to read).

    A subclass holds the settings and says how to read them in ``create_reader``. The
    class attributes tell mesh what the source guarantees.
    """

    #: True when the source can rewind to a recorded position (exactly-once capable).
    replayable: bool = True
    #: True when the source ends by itself.
    bounded: bool = True
    #: Shown in ``mesh status``.
    kind: str = "source"
    #: True when the source decodes what it reads (text, JSON): input it cannot decode
    #: is a dead letter when the job sets them aside.
    decodes: bool = False

    def describe(self) -> dict[str, Any]:
        """A JSON summary of the settings, for status output."""
        return {"type": type(self).__name__}

    def create_reader(self, ctx: TaskContext) -> SourceReader:
        """The reader of subtask ``ctx.subtask_index`` (called on the node)."""
        raise NotImplementedError(
            f"source {type(self).__name__} does not say how it is read: "
            "define create_reader (see docs/connectors.md)"
        )


@dataclass(frozen=True, slots=True)
class RestoredSplits:
    """The splits a checkpoint gives back to one source subtask."""

    #: This subtask's share: read these.
    mine: list[Split]
    #: Every split of every subtask at the checkpoint (to tell a split that is new since
    #: then, such as a Kafka partition added later, from one another subtask reads).
    everyone: list[Split]


class SourceReader:
    """Reads one source subtask's splits.

    The subtask calls, in order: ``initialize`` (restored splits, or None), ``open``,
    then ``read`` until it returns None, with ``snapshot`` between reads at every
    checkpoint, and ``close`` at the end whatever happened. Everything runs on the node's
    event loop: ``read`` must not block it (await, or hand blocking work to a thread with
    ``anyio.to_thread.run_sync``).
    """

    #: Undecodable input since ``take_rejected`` was last called (``UndecodableInput``
    #: errors naming where the input was); the subtask sets each aside as a dead letter
    #: or fails with the first.
    rejected: tuple[UndecodableInput, ...] = ()
    #: The split the records of the last ``read`` came from, when the reader tracks event
    #: time per split (``split_ids``); each read then returns records of one split only.
    last_split: str | None = None

    #: The splits this reader holds, with their positions (kept up to date by ``read``);
    #: what the default ``initialize`` and ``snapshot`` work with.
    splits: list[Split]

    def plan(self) -> list[Split]:
        """This subtask's splits when the job starts without a checkpoint (called by the
        default ``initialize``: keep it quick, or plan in ``open`` instead)."""
        return []

    def initialize(self, restored: RestoredSplits | None) -> None:
        """Adopt the ``restored`` splits (``restored.mine``), or plan fresh ones (None).

        The default keeps them in ``self.splits``; a reader that must do I/O to plan
        (ask a broker for partitions) overrides it and plans in ``open``."""
        self.splits = [dict(s) for s in (self.plan() if restored is None else restored.mine)]

    def snapshot(self, checkpoint_id: int) -> list[Split]:
        """The splits with their current positions (JSON), taken at checkpoint
        ``checkpoint_id``'s barrier: exactly the records ``read`` handed out so far are
        behind these positions. The default copies ``self.splits``."""
        return [dict(s) for s in getattr(self, "splits", [])]

    async def open(self) -> None:
        """Called once, after ``initialize`` and before the first ``read``: acquire files,
        sockets, clients (and plan the splits, when ``initialize`` got none)."""

    async def read(self, max_records: int) -> list[Any] | None:
        """Up to ``max_records`` records; ``[]`` when none are ready yet (return promptly,
        within about 50 ms, so the subtask can take checkpoints); None at the end."""
        raise NotImplementedError

    def split_ids(self) -> list[str] | None:
        """The ids of the splits this reader holds now, when it tracks event time per
        split (the subtask's watermark is then the smallest of its splits', and a split
        that stays silent is idle on its own); None: one watermark for the subtask."""
        return None

    def take_rejected(self) -> list[UndecodableInput]:
        """The input read since the last call that could not be decoded."""
        rejected, self.rejected = self.rejected, ()
        return list(rejected)

    def reject(self, error: UndecodableInput) -> None:
        """Set ``error`` aside for ``take_rejected`` (leave its input out of ``read``): a
        dead letter when the job sets them aside and the source says it ``decodes``,
        else the subtask fails with it."""
        self.rejected = (*self.rejected, error)

    def progress(self) -> tuple[int, int] | None:
        """How much of a bounded input was read: ``(done, total)`` in the reader's own
        unit (bytes of a file, records); None when unknown or unbounded."""
        return None

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: the positions it holds are durable
        (a Kafka source reports them to its consumer group here, for monitoring)."""

    def close(self) -> None:
        """Release files, sockets and clients."""


class Sink:
    """Base of every sink description (where records go).

    A subclass holds the settings and makes a ``SinkWriter`` per subtask; an exactly-once
    sink also makes a ``Committer``.
    """

    def describe(self) -> dict[str, Any]:
        """A JSON summary of the settings, for status output."""
        return {"type": type(self).__name__}

    def create_writer(self, ctx: TaskContext) -> SinkWriter:
        """The writer of subtask ``ctx.subtask_index`` (called on the node)."""
        raise NotImplementedError(
            f"sink {type(self).__name__} does not say how it is written: "
            "define create_writer (see docs/connectors.md)"
        )

    def create_committer(self, ctx: TaskContext) -> Committer | None:
        """The committer of subtask ``ctx.subtask_index``, for a two-phase (exactly-once)
        sink; None (the default): what the writer writes is final at once."""
        return None


class SinkWriter:
    """Writes one sink subtask's records.

    The subtask calls ``open``, then ``write`` with each batch; at every checkpoint
    barrier ``flush`` and then (two-phase sinks) ``prepare_commit``; ``finish`` when the
    whole job has ended; ``abort`` when the subtask fails or is cancelled; ``close`` at the
    end whatever happened. ``write`` runs on the node's event loop and must not block it.
    """

    #: True when ``wait_writable`` must be awaited after every ``write`` (the writer can
    #: fall behind: awaiting it is how the sink pushes back on the job).
    backpressured: bool = False

    async def open(self) -> None:
        """Called once, before the first ``write``."""

    def write(self, records: list[Any]) -> None:
        """Take a batch of records."""
        raise NotImplementedError

    async def wait_writable(self) -> None:
        """Return when the writer has room again (``backpressured`` writers only)."""

    async def flush(self) -> None:
        """At a checkpoint barrier and at the end of input: make what was written durable
        (an at-least-once sink waits here until the destination acknowledged it)."""

    def prepare_commit(self, transaction: str) -> dict[str, Any] | None:
        """Two-phase sinks: seal what was written since the last call as a committable
        (a JSON object the ``Committer`` can make visible, even in another process after
        a failure) named ``transaction``; None when nothing was written. The keys
        ``checkpoint`` and ``job`` are mesh's."""
        return None

    def finish(self) -> None:
        """The whole job ended (every subtask's input is done and committed)."""

    def abort(self) -> None:
        """The subtask failed or was cancelled: drop what was not committed."""

    def close(self) -> None:
        """Release files, sockets and clients."""


class Committer:
    """Makes a two-phase sink's committables visible, once each.

    ``commit`` is called for checkpoint ``n``'s committables when checkpoint ``n``
    completes, in checkpoint order; after a failure, the restored checkpoint's
    committables are committed again before anything new is written. It must therefore
    be idempotent: committing what is already visible does nothing. A commit that raises
    fails the subtask, and the job restarts and commits again.
    """

    async def open(self) -> None:
        """Called once, before the first ``commit`` or ``clean_up``."""

    async def commit(self, committable: dict[str, Any]) -> None:
        """Make ``committable`` visible (idempotent)."""
        raise NotImplementedError

    async def clean_up(self, job_id: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        """Delete what job ``job_id``'s writers left uncommitted (of writer ``subtask``
        only, or of every writer when None), except the committables in ``keep``: after a
        failure they were written again, or will be."""

    def close(self) -> None:
        """Release files, sockets and clients."""
