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

Event time (``EventTime``, mixed in): records may come with timestamps, watermarks
arrive with the data, and operators fire timers as event time and the clock move.

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
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio
import orjson

from mesh import faults
from mesh._excgroups import unwrap
from mesh.errors import ChannelError
from mesh.graph.keygroups import key_group_range
from mesh.graph.logical import DEAD_LETTER, OperatorSpec
from mesh.node.connectors.readers import SourceReader
from mesh.node.connectors.writers import SinkOperator
from mesh.node.dataplane.channels import InputGate, Interrupted
from mesh.node.operators.base import RestoredState, RuntimeOperator
from mesh.node.operators.records import RecordFailure, dead_letter
from mesh.node.runtime.alignment import (
    AbortCheckpoint,
    Action,
    BarrierAligner,
    BlockChannel,
    TakeSnapshot,
    UnblockAll,
)
from mesh.node.runtime.eventtime import EventTime
from mesh.node.runtime.output import EdgeWriter
from mesh.state.backends import SnapshotJob
from mesh.state.snapshot import create_snapshot_file, file_info
from mesh.time.clock import Clock
from mesh.time.watermarks import MAX_WATERMARK
from mesh.transport.frames import FrameKind

__all__ = ["CheckpointTarget", "SnapshotFile", "SubtaskRunner", "TaskState"]

log = logging.getLogger("mesh.node.task")


class TaskState(StrEnum):
    """Lifecycle of a subtask."""

    DEPLOYED = "DEPLOYED"
    RUNNING = "RUNNING"
    ENDING = "ENDING"  # input ended; a sink waits for the job's end to commit
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


@dataclass
class TaskMetrics:
    """Counters of one subtask (read by heartbeats)."""

    records_in: int = 0
    records_out: int = 0
    backpressure_ms: float = 0.0  # completed waits for output room
    backpressured_since: float | None = None  # monotonic ms, while waiting now
    started_ms: int = 0
    finished_ms: int = 0
    dead_letters: int = 0  # records set aside because user code raised on them

    def backpressure_total(self, now_ms: float) -> float:
        """Time spent waiting for output room, including a wait going on now."""
        since = self.backpressured_since
        return self.backpressure_ms + (now_ms - since if since is not None else 0.0)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot file one operator subtask wrote for a checkpoint."""

    uid: str
    file: str  # name inside the checkpoint directory
    size: int
    sha256: str
    key_groups: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class CheckpointTarget:
    """Where a subtask reports what happened to a checkpoint."""

    ack: Callable[[int, list[SnapshotFile], float], None]  # (id, files, duration ms)
    decline: Callable[[int, str], None]  # (id, reason)


@dataclass(frozen=True, slots=True)
class _Capture:
    spec: OperatorSpec
    path: Path
    job: SnapshotJob | None
    keyed: bool


class SubtaskRunner(EventTime):
    """Runs one subtask's chain until its input ends, it fails, or it is cancelled."""

    def __init__(
        self,
        *,
        name: str,
        operators: list[RuntimeOperator],
        writers: list[EdgeWriter],
        clock: Clock,
        buffer_timeout_ms: int,
        read_batch: int,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        checkpoints: CheckpointTarget,
        exactly_once: bool = True,
        max_backlog: int = 2,
        reader: SourceReader | None = None,
        source_spec: OperatorSpec | None = None,
        gate: InputGate | None = None,
        restored: dict[str, RestoredState] | None = None,
        side_outputs: dict[str, dict[str, list[EdgeWriter]]] | None = None,
        timestamp: Callable[[Any], Any] | None = None,
        max_delay_ms: int = 0,
        idle_timeout_ms: int | None = None,
        watermark_interval_ms: int = 200,
    ) -> None:
        if (reader is None) == (gate is None):
            raise ValueError("a subtask has either a reader or an input gate")
        self.name = name
        self.operators = operators
        # Every output edge (events go to all of them); records of the chain's main output
        # go to ``_outputs``; side outputs (by operator uid and tag) to their edges, dead
        # letters among them.
        self.writers = writers
        self._side_outputs = side_outputs or {}
        self._dead_letters = {
            uid: tags[DEAD_LETTER][0]
            for uid, tags in self._side_outputs.items()
            if tags.get(DEAD_LETTER)
        } or None
        side = {id(w) for tags in self._side_outputs.values() for ws in tags.values() for w in ws}
        self._outputs = [w for w in writers if id(w) not in side]
        self.reader = reader
        self.source_spec = source_spec
        self.gate = gate
        self.clock = clock
        self.buffer_timeout_ms = buffer_timeout_ms
        self.read_batch = read_batch
        self.max_backlog = max_backlog
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.checkpoints = checkpoints
        self.restored = restored or {}
        self.state = TaskState.DEPLOYED
        self.metrics = TaskMetrics()
        self.error: str | None = None
        # What a cancellation does to sink output: commit it (a user stopped a job that
        # takes no checkpoints) or drop it.
        self.commit_on_cancel = False
        # A sink can only be the last operator of a chain; records_out counts what it got.
        last = operators[-1] if operators else None
        self._sink = last if isinstance(last, SinkOperator) else None
        self._transforms = operators[:-1] if self._sink is not None else list(operators)
        # The chain head, when its keyed state must be loaded/stored around each batch.
        head = self._transforms[0] if self._transforms else None
        self._io_head = (
            head if head is not None and head.backend and head.backend.needs_io else None
        )
        self._aligner = (
            BarrierAligner(gate.channels, exactly_once=exactly_once) if gate is not None else None
        )
        # The newest checkpoint this subtask snapshotted (a trigger may come twice).
        self._last_snapshot = -1
        # Checkpoint triggers for a source subtask: (id, barrier payload), oldest first.
        self._triggers: deque[tuple[int, bytes]] = deque()
        self._triggered = anyio.Event()
        # Barrier payloads (kind, directory) by checkpoint id, for an alignment under way.
        self._barrier_meta: dict[int, bytes] = {}
        self._final_commit = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.on_state: Callable[[SubtaskRunner], None] = lambda runner: None
        self._init_time(timestamp, max_delay_ms, idle_timeout_ms, watermark_interval_ms)

    # -- the chain ------------------------------------------------------------------------

    def _push(self, batch: list[Any], stamps: list[int] | None, start: int = 0) -> None:
        """Run ``batch`` (with its event ``stamps``, if it has any) through the chain from
        operator ``start`` on, then to the sink or the output edges."""
        divert = self._dead_letters is not None
        for op in self._transforms[start:] if start else self._transforms:
            if divert:
                batch, stamps = self._process_or_divert(op, batch, stamps)
            elif stamps is None:
                batch = op.process(batch)
            else:
                batch, stamps = op.process_timed(batch, stamps)
            if op.side_records:
                self._route_side(op)
            if not batch:
                return
        self.metrics.records_out += len(batch)
        if self._sink is not None:
            self._sink.process(batch)
        for writer in self._outputs:
            writer.write(batch, stamps)

    def _process_or_divert(
        self, op: RuntimeOperator, batch: list[Any], stamps: list[int] | None
    ) -> tuple[list[Any], list[int] | None]:
        """``op.process``, with each record that makes user code raise set aside as a dead
        letter (the record, the operator, the traceback) while the rest go on."""
        assert self._dead_letters is not None
        writer = self._dead_letters.get(op.spec.uid)
        if writer is None:
            if stamps is None:
                return op.process(batch), None
            return op.process_timed(batch, stamps)
        out: list[Any] = []
        times: list[int] | None = None if stamps is None else []
        while batch:
            try:
                if stamps is None or times is None:
                    out.extend(op.process(batch))
                else:
                    made, made_stamps = op.process_timed(batch, stamps)
                    out.extend(made)
                    times.extend(made_stamps)
                break
            except RecordFailure as failure:
                out.extend(failure.output)
                if stamps is not None and times is not None:
                    prefix = failure.stamps
                    times.extend(stamps[: failure.index] if prefix is None else prefix)
                    stamps = stamps[failure.index + 1 :]
                record = batch[failure.index]
                writer.write([dead_letter(op.spec, self.subtask_index, record, failure)])
                self._count_dead_letter()
                batch = batch[failure.index + 1 :]
        return out, times

    def _count_dead_letter(self) -> None:
        self.metrics.dead_letters += 1

    async def _push_batch(self, batch: list[Any], stamps: list[int] | None = None) -> None:
        head = self._io_head
        if head is None:
            self._push(batch, stamps)
            return
        assert head.backend is not None
        await head.backend.before_batch(head.keys_of(batch))
        self._push(batch, stamps)
        await head.backend.after_batch()

    async def _respect_backpressure(self) -> None:
        sink = self._sink
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

    # -- checkpoints ----------------------------------------------------------------------

    def trigger(self, checkpoint_id: int, kind: str, directory: str) -> None:
        """A source subtask: take checkpoint ``checkpoint_id`` at the next batch boundary."""
        payload = orjson.dumps({"kind": kind, "dir": directory})
        self._triggers.append((checkpoint_id, payload))
        self._triggered.set()

    def _capture(self, checkpoint_id: int, directory: Path) -> list[_Capture]:
        """Take every operator's state now (on the loop); files are finished later."""
        captures: list[_Capture] = []
        try:
            self._capture_into(captures, checkpoint_id, directory)
        except BaseException:
            for capture in captures:  # release what the captures so far hold
                if capture.job is not None:
                    capture.job.finish()
            raise
        return captures

    def _capture_into(self, captures: list[_Capture], checkpoint_id: int, directory: Path) -> None:
        meta = {
            "checkpoint_id": checkpoint_id,
            "subtask": self.subtask_index,
            "parallelism": self.parallelism,
            "max_parallelism": self.max_parallelism,
        }
        if self.reader is not None and self.source_spec is not None:
            spec = self.source_spec
            path = directory / f"{spec.uid}-{self.subtask_index}.db"
            create_snapshot_file(
                path, {**meta, "uid": spec.uid}, {"splits": self.reader.snapshot()}
            )
            captures.append(_Capture(spec, path, None, keyed=False))
        for op in self.operators:
            state = op.snapshot_state(checkpoint_id)
            if not op.stateful:
                continue
            path = directory / f"{op.spec.uid}-{self.subtask_index}.db"
            groups = key_group_range(self.subtask_index, self.parallelism, self.max_parallelism)
            create_snapshot_file(
                path, {**meta, "uid": op.spec.uid, "key_groups": [groups.start, groups.end]}, state
            )
            job = op.backend.begin_snapshot(path) if op.backend is not None else None
            captures.append(_Capture(op.spec, path, job, keyed=op.backend is not None))

    async def _checkpoint(self, checkpoint_id: int, payload: bytes) -> None:
        """Snapshot at this barrier, forward it, and write the files in the background."""
        if checkpoint_id <= self._last_snapshot:
            return  # already taken (triggered twice)
        self._last_snapshot = checkpoint_id
        started = self.clock.monotonic_ms()
        meta = orjson.loads(payload)
        try:
            captures = self._capture(checkpoint_id, Path(meta["dir"]))
        except Exception as exc:
            log.warning("%s: checkpoint %d declined: %s", self.name, checkpoint_id, exc)
            self.checkpoints.decline(checkpoint_id, f"{self.name}: {exc}")
            captures = None
        if self.state is TaskState.RUNNING:  # outputs of an ENDING subtask are closed
            for writer in self.writers:
                writer.emit_event(FrameKind.BARRIER, checkpoint_id, payload)
        if captures is not None and self._tg is not None:
            self._tg.start_soon(self._write_snapshot, checkpoint_id, captures, started)

    async def _write_snapshot(
        self, checkpoint_id: int, captures: list[_Capture], started: float
    ) -> None:
        files = []
        try:
            for capture in captures:
                if capture.job is not None:
                    await anyio.to_thread.run_sync(capture.job.run)
                faults.reach("snapshot.writing")
                info = await anyio.to_thread.run_sync(file_info, capture.path)
                groups = key_group_range(self.subtask_index, self.parallelism, self.max_parallelism)
                files.append(
                    SnapshotFile(
                        uid=capture.spec.uid,
                        file=capture.path.name,
                        size=info.size,
                        sha256=info.sha256,
                        key_groups=(groups.start, groups.end) if capture.keyed else None,
                    )
                )
        except Exception as exc:
            log.warning("%s: checkpoint %d failed to write: %s", self.name, checkpoint_id, exc)
            self.checkpoints.decline(checkpoint_id, f"{self.name}: writing the snapshot: {exc}")
            return
        finally:
            for capture in captures:
                if capture.job is not None:
                    capture.job.finish()
        duration = self.clock.monotonic_ms() - started
        self.checkpoints.ack(checkpoint_id, files, duration)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: let operators commit (sync)."""
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
                payload = self._barrier_meta.pop(action.checkpoint, b"")
                await self._checkpoint(action.checkpoint, payload)
            elif isinstance(action, AbortCheckpoint):
                self._barrier_meta.pop(action.checkpoint, None)
                log.info("%s: alignment of checkpoint %d given up", self.name, action.checkpoint)

    # -- loops ----------------------------------------------------------------------------

    async def _handle_triggers(self) -> None:
        triggers = self._triggers
        while triggers:
            checkpoint_id, payload = triggers.popleft()
            await self._checkpoint(checkpoint_id, payload)
        self._triggered = anyio.Event()

    async def _run_source(self) -> None:
        assert self.reader is not None
        reader = self.reader
        metrics = self.metrics
        timed = self._timestamp is not None
        while True:
            if self._triggers:
                await self._handle_triggers()
            if self._time_due:
                await self._on_time()
            batch = await reader.read(self.read_batch)
            if batch is None:
                return
            if batch:
                metrics.records_in += len(batch)
                if timed:
                    batch, stamps = self._stamp(batch)
                    self._source_read(stamps)
                    await self._push_batch(batch, stamps)
                    await self._source_pushed()
                else:
                    await self._push_batch(batch)
                await self._respect_backpressure()
            await anyio.lowlevel.checkpoint()

    async def _run_gate(self) -> None:
        assert self.gate is not None and self._aligner is not None
        gate = self.gate
        aligner = self._aligner
        metrics = self.metrics
        loads = orjson.loads
        while (item := await gate.next()) is not None:
            if self._time_due:
                await self._on_time()
            if isinstance(item, Interrupted):
                continue
            channel, kind, arg, payload = item
            if kind is FrameKind.DATA:
                try:
                    batch = loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise ChannelError(
                        f"channel {channel.label} from {channel.peer}: undecodable payload ({exc})"
                    ) from None
                stamps = None
                if type(batch) is dict:  # a batch with event timestamps
                    timed: dict[str, Any] = batch
                    batch, stamps = timed.get("r"), timed.get("t")
                    if not (
                        isinstance(batch, list)
                        and isinstance(stamps, list)
                        and len(stamps) == len(batch)
                    ):
                        raise ChannelError(
                            f"channel {channel.label} from {channel.peer}: a timestamped "
                            "payload needs lists 'r' and 't' of equal length"
                        )
                elif not isinstance(batch, list):
                    raise ChannelError(
                        f"channel {channel.label} from {channel.peer}: payload is not a batch"
                    )
                gate.consumed(channel)
                metrics.records_in += len(batch)
                await self._push_batch(batch, stamps)
                await self._respect_backpressure()
                await anyio.lowlevel.checkpoint()
            elif kind is FrameKind.BARRIER:
                self._barrier_meta.setdefault(arg, bytes(payload))
                await self._act(aligner.on_barrier(channel.id, arg))
            elif kind is FrameKind.END_OF_PARTITION:
                await self._act(aligner.on_end_of_partition(channel.id))
                await self._on_channel_event(kind, channel.id, arg)
            elif kind is FrameKind.WATERMARK or kind is FrameKind.WATERMARK_STATUS:
                await self._on_channel_event(kind, channel.id, arg)

    def _finish_chain(self) -> None:
        for index, op in enumerate(self._transforms):
            out = op.finish()
            if out:
                self._push(out, None, index + 1)

    async def _initialize(self, opened: list[RuntimeOperator]) -> None:
        if self.reader is not None:
            restored = self.restored.get(self.source_spec.uid) if self.source_spec else None
            splits = restored.operator_state.get("splits", []) if restored is not None else None
            self.reader.initialize(splits)
            self.reader.open()
        for op in self.operators:
            op.open()
            opened.append(op)
            await op.initialize(self.restored.get(op.spec.uid))

    async def run(self) -> None:
        """Run to the end of input; raises what failed the subtask."""
        self.state = TaskState.RUNNING
        self.metrics.started_ms = self.clock.now_ms()
        opened: list[RuntimeOperator] = []
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._initialize(opened)
                if self.writers:
                    tg.start_soon(self._flusher)
                if self.needs_time_loop:
                    tg.start_soon(self._time_loop)
                if self.reader is not None:
                    await self._run_source()
                else:
                    await self._run_gate()
                # The end of input is the end of event time: every timer fires.
                await self._advance(MAX_WATERMARK)
                self._finish_chain()
                if self._sink is not None:
                    self._sink.end_of_input()
                for writer in self.writers:
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
                if self._sink is not None:
                    self._sink.commit_final()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            cancelled = isinstance(unwrap(exc), anyio.get_cancelled_exc_class())
            if self._sink is not None and self._sink in opened:
                try:
                    if self.commit_on_cancel and cancelled:
                        self._sink.commit_all()
                    else:
                        self._sink.abort()
                except Exception:
                    log.exception("sink %s failed to close its output", self._sink.spec.uid)
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


async def _first_of(*waits: Awaitable[None]) -> None:
    """Return as soon as any of ``waits`` finished (the others are cancelled)."""
    async with anyio.create_task_group() as tg:

        async def run(wait: Awaitable[None]) -> None:
            await wait
            tg.cancel_scope.cancel()

        for wait in waits:
            tg.start_soon(run, wait)
