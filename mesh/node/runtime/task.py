"""One running subtask: the loop that owns a chain.

A subtask is either a source subtask (a reader feeds its chain) or a consumer subtask
(its input gate feeds it). Either way one loop owns every operator's state: it takes a
batch, runs it through the chain as plain function calls, partitions the result into
the output edges, and only then awaits — for more input, for output credit
(backpressure), or to let the node's other tasks run. A flusher task sends partly
filled output buffers every ``buffer_timeout``.

Checkpoints (asynchronous barrier snapshots). A source subtask gets checkpoint triggers
in its mailbox and handles them between batches; a consumer subtask gets barriers in
its input and aligns them (``BarrierAligner``). Either way, at the barrier the loop
*captures* every operator's state (source positions, sink pre-commits, keyed tables),
forwards the barrier on every output, and goes on; the captured state is written to the
snapshot files by a background task, which then acknowledges the checkpoint (or
declines it, saying why).

The loop owns its collaborators: the ``Chain`` (operators as plain function calls),
``EventTime`` (records may come with timestamps, watermarks arrive with the data, and
operators fire timers as event time and the clock move) and, for a consumer, the
``BarrierAligner``. What it reads, writes and where it reports checkpoints are given as
``TaskInput``, ``TaskOutput`` and ``CheckpointTarget``.

At the end of input the chain finishes (operators emit what they held back), sinks
pre-commit their last transaction, END_OF_PARTITION goes out on every output channel,
and the subtask waits until every consumer acknowledged it. Then it is ENDING: it stays
alive and keeps answering checkpoint triggers with its final state (it sees no barriers
any more), so checkpoints go on while other subtasks still run. When every subtask of
the job is ENDING, ``commit_final`` lets sinks make their last output visible, and the
subtask is FINISHED.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from mesh._excgroups import unwrap
from mesh.connectors.base import RestoredSplits, SourceReader
from mesh.errors import ChannelError, FrameError, UndecodableInput
from mesh.graph.keygroups import KeyGroupRange, key_group_range
from mesh.graph.logical import OperatorSpec
from mesh.node.dataplane.channels import InputChannel, InputGate, Interrupted
from mesh.node.operators.base import RestoredState, RuntimeOperator
from mesh.node.runtime.alignment import (
    AbortCheckpoint,
    Action,
    BarrierAligner,
    BlockChannel,
    TakeSnapshot,
    UnblockAll,
)
from mesh.node.runtime.chain import Chain, PeekTap, SideOutputs
from mesh.node.runtime.eventtime import EventTime, EventTimeSettings
from mesh.node.runtime.metrics import TaskMetrics
from mesh.node.runtime.output import EdgeWriter
from mesh.node.runtime.record_traces import RecordTraces, TracedRun, traced_runs
from mesh.node.runtime.snapshots import SnapshotCapture, capture_state, finish_snapshot
from mesh.protocol.messages import SnapshotFile
from mesh.protocol.states import TaskState
from mesh.telemetry.tracing import Span, carrier_of, child_span, current_span, end_span, tracer
from mesh.time.clock import Clock
from mesh.time.watermarks import MAX_WATERMARK
from mesh.transport.barriers import BarrierPayload
from mesh.transport.batches import BatchError, decode_batch
from mesh.transport.frames import FrameKind
from mesh.transport.traced import TracedPayload

__all__ = [
    "CheckpointTarget",
    "SubtaskPosition",
    "SubtaskRunner",
    "TaskInput",
    "TaskOutput",
]

log = logging.getLogger("mesh.node.task")
_TRACER = tracer("mesh.node.task")


@dataclass(frozen=True, slots=True)
class CheckpointTarget:
    """Where a subtask reports what happened to a checkpoint."""

    # (id, files, duration ms, alignment ms)
    ack: Callable[[int, list[SnapshotFile], float, float], None]
    decline: Callable[[int, str], None]  # (id, reason)


@dataclass(frozen=True, slots=True)
class SubtaskPosition:
    """Which subtask of its task this is, and how the task's keys are spread."""

    index: int
    parallelism: int
    max_parallelism: int

    @property
    def key_groups(self) -> KeyGroupRange:
        """The key groups this subtask owns."""
        return key_group_range(self.index, self.parallelism, self.max_parallelism)


@dataclass(frozen=True, slots=True)
class TaskInput:
    """What a subtask reads: a source (``reader``) or its input channels (``gate``)."""

    reader: SourceReader | None = None
    source_spec: OperatorSpec | None = None  # the source a reader reads for
    read_batch: int = 1000  # records a source reads at a time
    gate: InputGate | None = None
    exactly_once: bool = True  # align barriers (False: at-least-once, no blocking)

    def __post_init__(self) -> None:
        if (self.reader is None) == (self.gate is None):
            raise ValueError("a subtask has either a reader or an input gate")


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """What a subtask writes: its output edges and how it buffers them."""

    writers: list[EdgeWriter]  # every output edge (events go to all of them)
    buffer_timeout_ms: int  # partly filled buffers go out after this long
    side_outputs: SideOutputs = field(default_factory=dict)  # dead letters among them
    max_backlog: int = 2  # buffers waiting for credit on a channel before the loop waits


class SubtaskRunner:
    """Runs one subtask's chain until its input ends, it fails, or it is cancelled."""

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        position: SubtaskPosition,
        operators: list[RuntimeOperator],
        reads: TaskInput,
        writes: TaskOutput,
        checkpoints: CheckpointTarget,
        restored: dict[str, RestoredState] | None = None,
        event_time: EventTimeSettings | None = None,
        record_traces: RecordTraces | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.position = position
        self.operators = operators
        self.reader = reads.reader
        self.source_spec = reads.source_spec
        self.gate = reads.gate
        self.read_batch = reads.read_batch
        self.writers = writes.writers
        self.buffer_timeout_ms = writes.buffer_timeout_ms
        self.max_backlog = writes.max_backlog
        self.checkpoints = checkpoints
        self.restored = restored or {}
        self.state = TaskState.DEPLOYED
        self.metrics = TaskMetrics()
        self.error: str | None = None
        # What a cancellation does to sink output: commit it (a user stopped a job that
        # takes no checkpoints) or drop it.
        self.commit_on_cancel = False
        self._chain = Chain(
            operators,
            writes.writers,
            writes.side_outputs,
            subtask_index=position.index,
            metrics=self.metrics,
        )
        #: The alignment group of a source subtask (``WatermarkStrategy.align_group``).
        self.align_group = event_time.align_group if event_time is not None else None
        self._time = EventTime(
            event_time or EventTimeSettings(),
            chain=self._chain,
            writers=writes.writers,
            clock=clock,
            gate=reads.gate,
            source_spec=reads.source_spec,
        )
        gate = reads.gate
        self._aligner = (
            BarrierAligner(gate.channels, exactly_once=reads.exactly_once)
            if gate is not None
            else None
        )
        # The newest checkpoint this subtask snapshotted (a trigger may come twice).
        self._last_snapshot = -1
        # Checkpoint triggers for a source subtask, oldest first.
        self._triggers: deque[tuple[int, BarrierPayload]] = deque()
        self._triggered = anyio.Event()
        # What came with the barriers of an alignment under way, by checkpoint id.
        self._barriers: dict[int, BarrierPayload] = {}
        # The alignment span of each checkpoint whose barriers are arriving.
        self._alignments: dict[int, Span] = {}
        # When the first barrier of each of those checkpoints arrived (monotonic ms).
        self._aligning_since: dict[int, float] = {}
        self._final_commit = anyio.Event()
        self._record_traces = record_traces or RecordTraces(name, {})
        self._tg: anyio.abc.TaskGroup | None = None
        self.on_state: Callable[[SubtaskRunner], None] = lambda runner: None

    @property
    def watermark(self) -> int:
        """The subtask's event time: the last watermark it sent on."""
        return self._time.watermark

    # -- the chain ------------------------------------------------------------------------

    async def _push_batch(self, batch: list[Any], stamps: list[int] | None = None) -> None:
        head = self._chain.io_head
        if head is None:
            self._chain.push(batch, stamps)
            return
        assert head.backend is not None
        await head.backend.before_batch(head.keys_of(batch))
        self._chain.push(batch, stamps)
        await head.backend.after_batch()

    async def _push_traced(
        self,
        batch: list[Any],
        stamps: list[int] | None,
        runs: list[TracedRun],
        channel: str | None = None,
    ) -> None:
        """Push ``batch``, each traced run of it as a batch of its own in a span of the
        trace it belongs to; what the chain writes meanwhile carries that span's context."""
        done = 0
        for start, end, context in runs:
            if start > done:
                await self._push_batch(batch[done:start], stamps[done:start] if stamps else None)
            part, part_stamps = batch[start:end], stamps[start:end] if stamps else None
            span = self._record_traces.start(context, end - start, channel)
            carrier = carrier_of(span)
            if carrier is None:  # nothing records traces here
                await self._push_batch(part, part_stamps)
            else:
                await self._push_in_span(span, carrier, part, part_stamps)
            done = end
        if done < len(batch):
            await self._push_batch(batch[done:], stamps[done:] if stamps else None)

    async def _push_in_span(
        self, span: Span, carrier: dict[str, str], batch: list[Any], stamps: list[int] | None
    ) -> None:
        for writer in self.writers:
            writer.tracing = carrier
        try:
            await self._push_batch(batch, stamps)
        except BaseException as exc:
            end_span(span, error=exc if isinstance(exc, Exception) else "cancelled")
            raise
        finally:
            for writer in self.writers:
                writer.tracing = None
        end_span(span)

    async def _respect_backpressure(self) -> None:
        sink = self._chain.sink
        if sink is not None and sink.needs_settle:
            await self._backpressured(sink.settle())
        limit = self.max_backlog
        for writer in self.writers:
            if writer.max_backlog() >= limit:
                await self._backpressured(writer.wait_backlog_below(limit))

    async def _backpressured(self, wait: Awaitable[None]) -> None:
        metrics = self.metrics
        started = metrics.backpressured_since = self.clock.monotonic_ms()
        try:
            if self.reader is None:
                await wait
            else:  # a source also wakes up for a checkpoint trigger
                await _first_of(wait, self._triggered.wait())
        finally:
            metrics.backpressured_since = None
            metrics.backpressure_ms += self.clock.monotonic_ms() - started

    async def _flusher(self) -> None:
        interval = max(self.buffer_timeout_ms, 1)
        while True:
            await self.clock.sleep_ms(interval)
            for writer in self.writers:
                writer.flush()

    def set_peek(self, tap: PeekTap | None) -> None:
        """Show ``tap`` every batch the chain hands on from now (None: stop)."""
        self._chain.peek = tap

    # -- checkpoints ----------------------------------------------------------------------

    def set_watermark_bound(self, bound: int | None) -> None:
        """A source of an alignment group: read while its watermark is at most ``bound``."""
        self._time.set_bound(bound)

    def trigger(self, checkpoint_id: int, barrier: BarrierPayload) -> None:
        """A source subtask: take checkpoint ``checkpoint_id`` at the next batch boundary."""
        self._triggers.append((checkpoint_id, barrier))
        self._triggered.set()

    def _capture(self, checkpoint_id: int, directory: Path) -> list[SnapshotCapture]:
        """Take every operator's state now (on the loop); files are finished later."""
        position = self.position
        return capture_state(
            checkpoint_id=checkpoint_id,
            directory=directory,
            index=position.index,
            parallelism=position.parallelism,
            max_parallelism=position.max_parallelism,
            key_groups=position.key_groups,
            reader=self.reader,
            source_spec=self.source_spec,
            operators=self.operators,
        )

    async def _checkpoint(
        self, checkpoint_id: int, barrier: BarrierPayload, alignment_ms: float = 0.0
    ) -> None:
        """Snapshot at this barrier, forward it, and write the files in the background;
        ``alignment_ms`` is how long the barriers took to align."""
        if checkpoint_id <= self._last_snapshot:
            return  # already taken (triggered twice)
        self._last_snapshot = checkpoint_id
        started = self.clock.monotonic_ms()
        span = child_span(
            _TRACER,
            "snapshot",
            barrier.trace,
            {
                "mesh.task": self.name,
                "mesh.subtask.index": self.position.index,
                "mesh.checkpoint.id": checkpoint_id,
                "mesh.checkpoint.kind": barrier.kind.value,
            },
        )
        try:
            with current_span(span):  # sinks pre-commit in the snapshot's trace
                sink = self._chain.sink
                if sink is not None:  # what was written before the barrier is durable
                    await sink.flush()
                captures = self._capture(checkpoint_id, Path(barrier.directory))
        except Exception as exc:
            log.warning("%s: checkpoint %d declined: %s", self.name, checkpoint_id, exc)
            self.checkpoints.decline(checkpoint_id, f"{self.name}: {exc}")
            end_span(span, error=exc)
            captures = None
        if self.state is TaskState.RUNNING:  # outputs of an ENDING subtask are closed
            payload = barrier.encode()
            for writer in self.writers:
                writer.emit_event(FrameKind.BARRIER, checkpoint_id, payload)
        if captures is not None and self._tg is not None:
            self._tg.start_soon(
                self._write_snapshot, checkpoint_id, captures, started, span, alignment_ms
            )
        elif captures is not None:
            end_span(span, error="the subtask stopped before writing its snapshot")

    async def _write_snapshot(
        self,
        checkpoint_id: int,
        captures: list[SnapshotCapture],
        started: float,
        span: Span,
        alignment_ms: float,
    ) -> None:
        try:
            files = await finish_snapshot(
                captures, index=self.position.index, key_groups=self.position.key_groups
            )
        except Exception as exc:
            log.warning("%s: checkpoint %d failed to write: %s", self.name, checkpoint_id, exc)
            self.checkpoints.decline(checkpoint_id, f"{self.name}: writing the snapshot: {exc}")
            end_span(span, error=exc)
            return
        duration = self.clock.monotonic_ms() - started
        self.checkpoints.ack(checkpoint_id, files, duration, alignment_ms)
        end_span(
            span,
            attributes={
                "mesh.snapshot.files": len(files),
                "mesh.snapshot.size_bytes": sum(f.size for f in files),
            },
        )

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: let operators commit (sync)."""
        if self.reader is not None:
            self.reader.notify_checkpoint_complete(checkpoint_id)
        for op in self.operators:
            op.notify_checkpoint_complete(checkpoint_id)

    def commit_final(self) -> None:
        """Every subtask of the job ended: an ENDING subtask may commit and finish."""
        self._final_commit.set()

    async def _act(self, actions: list[Action]) -> None:
        gate = self.gate
        assert gate is not None
        for action in actions:
            if isinstance(action, BlockChannel):
                gate.block(action.channel)
            elif isinstance(action, UnblockAll):
                gate.unblock_all()
            elif isinstance(action, TakeSnapshot):
                alignment = self._alignments.pop(action.checkpoint, None)
                if alignment is not None:
                    end_span(alignment)
                since = self._aligning_since.pop(action.checkpoint, None)
                aligned_ms = self.clock.monotonic_ms() - since if since is not None else 0.0
                await self._checkpoint(
                    action.checkpoint, self._barriers.pop(action.checkpoint), aligned_ms
                )
            elif isinstance(action, AbortCheckpoint):
                self._barriers.pop(action.checkpoint, None)
                self._aligning_since.pop(action.checkpoint, None)
                alignment = self._alignments.pop(action.checkpoint, None)
                if alignment is not None:
                    end_span(alignment, error="given up: a newer barrier overtook it")
                log.info("%s: alignment of checkpoint %d given up", self.name, action.checkpoint)

    # -- loops ----------------------------------------------------------------------------

    async def _handle_triggers(self) -> None:
        triggers = self._triggers
        while triggers:
            checkpoint_id, barrier = triggers.popleft()
            await self._checkpoint(checkpoint_id, barrier)
        self._triggered = anyio.Event()

    async def _run_source(self) -> None:
        assert self.reader is not None
        reader = self.reader
        metrics = self.metrics
        time = self._time
        timed = time.stamps_records
        sampler = self._record_traces.sampler
        read_batch = self.read_batch
        # A reader that keeps event time per split may gain or lose splits as it reads.
        per_split = timed and reader.split_ids() is not None
        while True:
            if self._triggers:
                await self._handle_triggers()
            if time.due:
                await time.on_time()
            if time.paused:  # too far ahead of its alignment group: wait, reading nothing
                await _first_of(time.wait_unpaused(), self._triggered.wait())
                continue
            batch = await reader.read(read_batch)
            if reader.rejected:
                self._set_aside_undecodable(reader.take_rejected())
            if per_split:
                time.set_splits(reader.split_ids())
            if batch is None:
                time.source_ended()
                return
            if batch:
                metrics.records_in += len(batch)
                picks = (
                    sampler.sampled(len(batch), self.clock.monotonic_ms())
                    if sampler is not None
                    else None
                )
                if timed:
                    batch, stamps = time.stamp(batch)
                    time.source_read(stamps, reader.last_split)
                    if picks:
                        await self._push_traced(batch, stamps, [(i, i + 1, {}) for i in picks])
                    else:
                        await self._push_batch(batch, stamps)
                    await time.source_pushed()
                elif picks:
                    await self._push_traced(batch, None, [(i, i + 1, {}) for i in picks])
                else:
                    await self._push_batch(batch)
                await self._respect_backpressure()
            await anyio.lowlevel.checkpoint()

    def _set_aside_undecodable(self, rejected: list[UndecodableInput]) -> None:
        """Input the source could not decode: dead letters (with where it was read), or
        the subtask fails with the first (dead letters off)."""
        assert self.source_spec is not None
        for error in rejected:
            self._chain.set_aside(self.source_spec, error.raw, error)

    async def _run_gate(self) -> None:
        assert self.gate is not None and self._aligner is not None
        gate = self.gate
        aligner = self._aligner
        metrics = self.metrics
        time = self._time
        barriers = self._barriers
        while (item := await gate.next()) is not None:
            if time.due:
                await time.on_time()
            if isinstance(item, Interrupted):
                continue
            channel, kind, arg, payload = item
            if kind is FrameKind.DATA:
                marks = payload.marks if type(payload) is TracedPayload else None
                try:
                    batch, stamps = decode_batch(payload if marks is None else memoryview(payload))
                except BatchError as exc:
                    raise _broken(channel, exc) from None
                gate.consumed(channel)
                metrics.records_in += len(batch)
                if marks is not None:
                    runs = traced_runs(len(batch), marks)
                    await self._push_traced(batch, stamps, runs, channel.label)
                else:
                    await self._push_batch(batch, stamps)
                await self._respect_backpressure()
                await anyio.lowlevel.checkpoint()
            elif kind is FrameKind.BARRIER:
                if arg not in barriers:
                    try:
                        barrier = barriers[arg] = BarrierPayload.decode(payload)
                    except FrameError as exc:
                        raise _broken(channel, exc) from None
                    self._aligning_since[arg] = self.clock.monotonic_ms()
                    self._alignments[arg] = child_span(
                        _TRACER,
                        "alignment",
                        barrier.trace,
                        {
                            "mesh.task": self.name,
                            "mesh.subtask.index": self.position.index,
                            "mesh.checkpoint.id": arg,
                            "mesh.alignment.channels": len(gate.channels),
                        },
                    )
                await self._act(aligner.on_barrier(channel.id, arg))
            elif kind is FrameKind.END_OF_PARTITION:
                await self._act(aligner.on_end_of_partition(channel.id))
                await time.on_channel_event(kind, channel.id, arg)
            elif kind is FrameKind.WATERMARK or kind is FrameKind.WATERMARK_STATUS:
                await time.on_channel_event(kind, channel.id, arg)

    async def _initialize(self, opened: list[RuntimeOperator]) -> None:
        if self.reader is not None:
            restored = self.restored.get(self.source_spec.uid) if self.source_spec else None
            self.reader.initialize(
                RestoredSplits(
                    mine=restored.operator_state.get("splits", []),
                    everyone=restored.all_operator_state.get("splits", []),
                )
                if restored is not None
                else None
            )
            await self.reader.open()
            self._time.set_splits(self.reader.split_ids())
        for op in self.operators:
            op.open()
            opened.append(op)
            await op.initialize(self.restored.get(op.spec.uid))

    async def run(self) -> None:
        """Run to the end of input; raises what failed the subtask."""
        self.state = TaskState.RUNNING
        self.metrics.started_ms = self.clock.now_ms()
        sink = self._chain.sink
        opened: list[RuntimeOperator] = []
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._initialize(opened)
                if sink is not None:
                    tg.start_soon(sink.run_commits)
                if self.writers:
                    tg.start_soon(self._flusher)
                if self._time.needs_time_loop:
                    tg.start_soon(self._time.time_loop)
                if self.reader is not None:
                    await self._run_source()
                else:
                    await self._run_gate()
                # The end of input is the end of event time: every timer fires.
                await self._time.advance(MAX_WATERMARK)
                await self._chain.finish()
                if sink is not None:
                    await sink.end_of_input()
                for writer in self.writers:
                    writer.end_of_input()
                    writer.emit_event(FrameKind.END_OF_PARTITION)
                for writer in self.writers:
                    for channel in writer.channels:
                        await channel.end_acked.wait()
                self.state = TaskState.ENDING
                self.on_state(self)
                log.debug("%s: input ended; waiting for the job's end", self.name)
                while not self._final_commit.is_set():
                    await self._handle_triggers()
                    await _first_of(self._final_commit.wait(), self._triggered.wait())
                log.debug("%s: final commit", self.name)
                if sink is not None:
                    await sink.commit_final()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            cancelled = isinstance(unwrap(exc), anyio.get_cancelled_exc_class())
            if sink is not None and sink in opened:
                try:
                    if self.commit_on_cancel and cancelled:
                        with anyio.CancelScope(shield=True):
                            await sink.commit_all()
                    else:
                        sink.abort()
                except Exception:
                    log.exception("sink %s failed to close its output", sink.spec.uid)
            raise
        finally:
            self._tg = None
            for op in opened:
                try:
                    op.close()
                except Exception:
                    log.exception("operator %s failed to close", op.spec.uid)
                with anyio.CancelScope(shield=True):
                    try:
                        await op.close_state()
                    except Exception:
                        log.exception("operator %s failed to close its state", op.spec.uid)
            if self.reader is not None:
                self.reader.close()
            self.metrics.finished_ms = self.clock.now_ms()
        self.state = TaskState.FINISHED


def _broken(channel: InputChannel, exc: Exception) -> ChannelError:
    """A channel that delivered a payload that does not decode."""
    return ChannelError(f"channel {channel.label} from {channel.peer}: {exc}")


async def _first_of(*waits: Awaitable[None]) -> None:
    """Return as soon as any of ``waits`` finished (the others are cancelled)."""
    async with anyio.create_task_group() as tg:

        async def run(wait: Awaitable[None]) -> None:
            await wait
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(run, wait)
