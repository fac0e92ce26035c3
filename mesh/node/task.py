"""One running subtask: the loop that owns a chain.

A subtask is either a source subtask (a reader feeds its chain) or a consumer subtask
(its input gate feeds it). Either way one loop owns every operator's state: it takes a
batch, runs it through the chain as plain function calls, partitions the result into
the output edges, and only then awaits — for more input, for output credit
(backpressure), or to let the node's other tasks run. A flusher task sends partly
filled output buffers every ``buffer_timeout``.

At the end of input the chain finishes (operators emit what they held back), sinks
commit, END_OF_PARTITION goes out on every output channel, and the subtask waits until
every consumer acknowledged it before it reports FINISHED.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import anyio
import orjson

from mesh._excgroups import unwrap
from mesh.errors import ChannelError
from mesh.node.channels import InputGate
from mesh.node.operators import RuntimeOperator
from mesh.node.output import EdgeWriter
from mesh.node.readers import SourceReader
from mesh.node.writers import SinkOperator
from mesh.time.clock import Clock
from mesh.transport.frames import FrameKind

__all__ = ["SubtaskRunner", "TaskState"]

log = logging.getLogger("mesh.node.task")


class TaskState(StrEnum):
    """Lifecycle of a subtask."""

    DEPLOYED = "DEPLOYED"
    RUNNING = "RUNNING"
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

    def backpressure_total(self, now_ms: float) -> float:
        """Time spent waiting for output room, including a wait going on now."""
        since = self.backpressured_since
        return self.backpressure_ms + (now_ms - since if since is not None else 0.0)


class SubtaskRunner:
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
        max_backlog: int = 2,
        reader: SourceReader | None = None,
        gate: InputGate | None = None,
    ) -> None:
        if (reader is None) == (gate is None):
            raise ValueError("a subtask has either a reader or an input gate")
        self.name = name
        self.operators = operators
        # A sink can only be the last operator of a chain; records_out counts what it got.
        last = operators[-1] if operators else None
        self._sink = last if isinstance(last, SinkOperator) else None
        self._transforms = operators[:-1] if self._sink is not None else list(operators)
        self.writers = writers
        self.reader = reader
        self.gate = gate
        self.clock = clock
        self.buffer_timeout_ms = buffer_timeout_ms
        self.read_batch = read_batch
        self.max_backlog = max_backlog
        self.state = TaskState.DEPLOYED
        self.metrics = TaskMetrics()
        self.error: str | None = None
        # What a cancellation does to sink output: commit it (a user stopped the job)
        # or drop it (the job failed elsewhere).
        self.commit_on_cancel = False

    # -- the chain ------------------------------------------------------------------------

    def _push(self, batch: list[Any], start: int = 0) -> None:
        for op in self._transforms[start:] if start else self._transforms:
            batch = op.process(batch)
            if not batch:
                return
        self.metrics.records_out += len(batch)
        if self._sink is not None:
            self._sink.process(batch)
        for writer in self.writers:
            writer.write(batch)

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
            await wait
        finally:
            metrics.backpressured_since = None
            metrics.backpressure_ms += self.clock.monotonic_ms() - started

    async def _flusher(self) -> None:
        interval = max(self.buffer_timeout_ms, 1)
        while True:
            await self.clock.sleep_ms(interval)
            for writer in self.writers:
                writer.flush()

    # -- loops ----------------------------------------------------------------------------

    async def _run_source(self) -> None:
        assert self.reader is not None
        reader = self.reader
        metrics = self.metrics
        while True:
            batch = await reader.read(self.read_batch)
            if batch is None:
                return
            if batch:
                metrics.records_in += len(batch)
                self._push(batch)
                await self._respect_backpressure()
            await anyio.lowlevel.checkpoint()

    async def _run_gate(self) -> None:
        assert self.gate is not None
        gate = self.gate
        metrics = self.metrics
        loads = orjson.loads
        while (item := await gate.next()) is not None:
            channel, kind, _arg, payload = item
            if kind is FrameKind.DATA:
                try:
                    batch = loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise ChannelError(
                        f"channel {channel.label} from {channel.peer}: undecodable payload ({exc})"
                    ) from None
                if not isinstance(batch, list):
                    raise ChannelError(
                        f"channel {channel.label} from {channel.peer}: payload is not a batch"
                    )
                gate.consumed(channel)
                metrics.records_in += len(batch)
                self._push(batch)
                await self._respect_backpressure()
                await anyio.lowlevel.checkpoint()
            # Watermarks and barriers arrive with event time and checkpoints.

    def _finish_chain(self) -> None:
        for index, op in enumerate(self._transforms):
            out = op.finish()
            if out:
                self._push(out, index + 1)

    async def run(self) -> None:
        """Run to the end of input; raises what failed the subtask."""
        self.state = TaskState.RUNNING
        self.metrics.started_ms = self.clock.now_ms()
        opened: list[RuntimeOperator] = []
        reader_open = False
        try:
            if self.reader is not None:
                self.reader.open()
                reader_open = True
            for op in self.operators:
                op.open()
                opened.append(op)
            async with anyio.create_task_group() as tg:
                if self.writers:
                    tg.start_soon(self._flusher)
                if self.reader is not None:
                    await self._run_source()
                else:
                    await self._run_gate()
                self._finish_chain()
                if self._sink is not None:
                    self._sink.commit()
                for writer in self.writers:
                    writer.emit_event(FrameKind.END_OF_PARTITION)
                for writer in self.writers:
                    for channel in writer.channels:
                        await channel.end_acked.wait()
                tg.cancel_scope.cancel()
        except BaseException as exc:
            cancelled = isinstance(unwrap(exc), anyio.get_cancelled_exc_class())
            if self._sink is not None and self._sink in opened:
                try:
                    if self.commit_on_cancel and cancelled:
                        self._sink.commit()
                    else:
                        self._sink.abort()
                except Exception:
                    log.exception("sink %s failed to close its output", self._sink.spec.uid)
            raise
        finally:
            for op in opened:
                try:
                    op.close()
                except Exception:
                    log.exception("operator %s failed to close", op.spec.uid)
            if self.reader is not None and reader_open:
                self.reader.close()
            self.metrics.finished_ms = self.clock.now_ms()
        self.state = TaskState.FINISHED
