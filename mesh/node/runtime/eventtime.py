"""A subtask's event time and processing time: the collaborator of ``SubtaskRunner``
that moves watermarks and fires timers.

* A source subtask with a ``WatermarkStrategy`` stamps each record it reads with the
  user's timestamp function and feeds a ``SourceWatermarks`` generator; every
  ``watermark_interval`` it sends the generator's watermark, or says it is idle. When
  its reader tracks event time per split (``set_splits`` with the reader's split ids),
  a ``SplitWatermarks`` takes over: the watermark is the smallest of the splits', and
  each split goes idle on its own.
* A consumer subtask feeds the WATERMARK, WATERMARK_STATUS and END_OF_PARTITION events
  of its input channels to a ``WatermarkValve``; when the valve's watermark rises, every
  operator of the chain fires the event-time timers it passed (their output goes down
  the rest of the chain) and then the watermark goes out on every output edge — after
  the records it covers. The end of input is the end of event time: every timer fires.
* Processing-time timers fire from the subtask's own loop (never concurrently with a
  batch): a small task sleeps on the clock until the next timer or tick is due, then
  asks the loop to run ``on_time``.

The runner owns an ``EventTime`` and calls it between batches; what fired timers emit
goes down the rest of the runner's ``Chain`` (the seam between the two).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from mesh.errors import RecordError
from mesh.graph.logical import OperatorSpec
from mesh.node.dataplane.channels import InputGate
from mesh.node.operators.records import UserCodeError, describe_record
from mesh.node.runtime.chain import Chain
from mesh.node.runtime.output import EdgeWriter
from mesh.time.clock import Clock
from mesh.time.watermarks import (
    NO_WATERMARK,
    Progress,
    SourceWatermarks,
    SplitWatermarks,
    WatermarkValve,
)
from mesh.transport.frames import FrameKind

__all__ = ["EventTime", "EventTimeSettings"]


@dataclass(frozen=True, slots=True)
class EventTimeSettings:
    """How a subtask keeps event time (a source's timestamps come from its strategy)."""

    timestamp: Callable[[Any], Any] | None = None  # a source's timestamp function
    max_delay_ms: int = 0  # how far out of order a source's records may come
    idle_timeout_ms: int | None = None  # a silent source is idle after this long
    watermark_interval_ms: int = 200  # how often a source sends its watermark
    # Watermark alignment (``mesh.time.alignment``): the source's group, and how it
    # reports (watermark, idle, ended, paused) to the coordinator.
    align_group: str | None = None
    max_drift_ms: int = 0
    report: Callable[[int, bool, bool, bool], None] | None = None


class EventTime:
    """Watermarks and timers of one subtask."""

    def __init__(
        self,
        settings: EventTimeSettings,
        *,
        chain: Chain,
        writers: list[EdgeWriter],
        clock: Clock,
        gate: InputGate | None = None,
        source_spec: OperatorSpec | None = None,
    ) -> None:
        self._chain = chain
        self._writers = writers
        self._clock = clock
        self._gate = gate
        self._source_spec = source_spec
        #: The subtask's event time: the last watermark it sent on.
        self.watermark = NO_WATERMARK
        self.idle = False
        self._timestamp = settings.timestamp
        self._max_delay_ms = settings.max_delay_ms
        self._idle_timeout_ms = settings.idle_timeout_ms
        # One generator for the subtask; per split once the reader reports split ids.
        self._source_watermarks: SourceWatermarks | SplitWatermarks | None = (
            SourceWatermarks(settings.max_delay_ms, settings.idle_timeout_ms, clock.monotonic_ms())
            if settings.timestamp is not None
            else None
        )
        self._valve = WatermarkValve(list(gate.channels)) if gate is not None else None
        self._interval_ms = settings.watermark_interval_ms
        self._timer_ops = [op for op in chain.transforms if op.has_timers]
        #: Set by the time loop when a tick or a timer is due; ``on_time`` clears it.
        self.due = False
        self._time_handled = anyio.Event()
        # Watermark alignment: how the source reports, what it last reported, and the
        # largest watermark it may read up to (None: no bound yet).
        self._report = settings.report if settings.align_group is not None else None
        self._reported: tuple[int, bool] | None = None
        # Besides every tick, a source reports when its watermark moved this far: the
        # others may be waiting for it, and a drift passes in less than a tick at speed.
        self._report_step = max(settings.max_drift_ms // 4, 1)
        # Until the coordinator says otherwise, an aligned source reads one batch and
        # waits: it may not run ahead of a group whose members it has not heard of.
        self.bound: int | None = NO_WATERMARK if self._report is not None else None
        # Set when something a paused source waits for happens (a tick, a new bound).
        self._wake = anyio.Event()

    @property
    def stamps_records(self) -> bool:
        """Whether a source stamps its records (it has a timestamp function)."""
        return self._timestamp is not None

    @property
    def needs_time_loop(self) -> bool:
        """Whether anything here depends on the clock (watermarks to send, timers)."""
        return self._source_watermarks is not None or bool(self._timer_ops)

    # -- sources: timestamps ------------------------------------------------------------------

    def stamp(self, batch: list[Any]) -> tuple[list[Any], list[int]]:
        """The records' event timestamps; a record whose timestamp cannot be had fails the
        subtask (or, with dead letters on, is set aside)."""
        fn = self._timestamp
        assert fn is not None
        try:
            stamps = list(map(fn, batch))
            if set(map(type, stamps)) <= {int}:
                return batch, stamps
        except UserCodeError:
            pass
        kept: list[Any] = []
        times: list[int] = []
        for record in batch:
            try:
                ts = fn(record)
                if type(ts) is int:
                    kept.append(record)
                    times.append(ts)
                    continue
                error = self._timestamp_error(
                    f"returned {ts!r} ({type(ts).__name__}) instead of an int of milliseconds",
                    record,
                )
            except UserCodeError as exc:
                error = self._timestamp_error(f"raised {type(exc).__name__}: {exc}", record)
                error.__cause__ = exc
            assert self._source_spec is not None
            self._chain.set_aside(self._source_spec, record, error)
        return kept, times

    def _timestamp_error(self, what: str, record: Any) -> RecordError:
        spec = self._source_spec
        assert spec is not None
        return RecordError(
            f"source {spec.uid!r} ({spec.name}): the WatermarkStrategy timestamp function "
            f"{what} — on record {describe_record(record)}"
        )

    def set_splits(self, ids: list[str] | None) -> None:
        """The splits the source's reader holds now (``SourceReader.split_ids``): its
        event time is then kept per split; None: one watermark for the subtask. Cheap
        when nothing changed; what a change allows goes out at the next batch or tick."""
        generator = self._source_watermarks
        if generator is None:  # no timestamps: no watermarks
            return
        now = self._clock.monotonic_ms()
        if ids is None:
            if isinstance(generator, SplitWatermarks):
                single = SourceWatermarks(self._max_delay_ms, self._idle_timeout_ms, now)
                # What was sent stays sent: the watermark never goes back.
                single.emitted, single.idle = generator.emitted, generator.idle
                self._source_watermarks = single
            return
        if isinstance(generator, SplitWatermarks):
            generator.set_splits(ids, now)
        else:
            self._source_watermarks = SplitWatermarks(
                self._max_delay_ms,
                self._idle_timeout_ms,
                now,
                ids,
                emitted=generator.emitted,
                idle=generator.idle,
            )

    def source_read(self, stamps: list[int], split: str | None = None) -> None:
        """A source read records with these timestamps (before they are pushed), all of
        split ``split`` (``SourceReader.last_split``) when the reader tracks splits."""
        generator = self._source_watermarks
        if generator is None or not stamps:
            return
        if isinstance(generator, SplitWatermarks):
            if split is None:
                raise ValueError(
                    f"source {self._source_name()}: its reader reports split ids but did "
                    "not name the split its records came from (set last_split in read)"
                )
            progress = generator.on_records(max(stamps), self._clock.monotonic_ms(), split)
        else:
            progress = generator.on_records(max(stamps), self._clock.monotonic_ms())
        if progress.idle is False:
            self._emit_status(False)

    def _source_name(self) -> str:
        spec = self._source_spec
        return f"{spec.uid!r} ({spec.name})" if spec is not None else "?"

    async def source_pushed(self) -> None:
        """After a batch: send the watermark it allows (behind its records)."""
        generator = self._source_watermarks
        if generator is not None:
            await self._apply(generator.poll())
            reported = self._reported
            if self._report is not None and (
                reported is None  # the group learns of us at once
                or generator.current() - reported[0] >= self._report_step
                or self.paused  # and of where we stopped
            ):
                self._report_progress(ended=False)

    # -- watermarks ------------------------------------------------------------------------------

    def _emit_status(self, idle: bool) -> None:
        self.idle = idle
        for writer in self._writers:
            writer.emit_event(FrameKind.WATERMARK_STATUS, 1 if idle else 0)

    async def _apply(self, progress: Progress) -> None:
        """Send on what a watermark machine decided: active, watermark, idle (in order)."""
        if not progress:
            return
        if progress.idle is False:
            self._emit_status(False)
        if progress.watermark is not None:
            await self.advance(progress.watermark)
        if progress.idle is True:
            self._emit_status(True)

    async def advance(self, watermark: int) -> None:
        """Event time reached ``watermark``: fire what it passed, then send it on."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        for index, op in enumerate(self._chain.transforms):
            self._pass_on(index, await op.on_watermark(watermark))
        for writer in self._writers:
            writer.emit_event(FrameKind.WATERMARK, watermark)

    def _pass_on(self, index: int, fired: tuple[list[Any], list[int]]) -> None:
        """What operator ``index`` emitted from its timers: side outputs to their edges,
        records down the rest of the chain."""
        op = self._chain.transforms[index]
        self._chain.route_side(op)
        out, stamps = fired
        if out:
            self._chain.push(out, stamps if op.spec.event_time else None, index + 1)

    async def on_channel_event(self, kind: FrameKind, channel_id: int, arg: int) -> None:
        """A WATERMARK, WATERMARK_STATUS or END_OF_PARTITION event from an input channel."""
        valve = self._valve
        assert valve is not None
        if kind is FrameKind.WATERMARK:
            await self._apply(valve.on_watermark(channel_id, arg))
        elif kind is FrameKind.WATERMARK_STATUS:
            await self._apply(valve.on_status(channel_id, arg != 0))
        elif kind is FrameKind.END_OF_PARTITION:
            await self._apply(valve.on_end(channel_id))

    # -- watermark alignment --------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """Whether a source of an alignment group is too far ahead to read on."""
        bound = self.bound
        generator = self._source_watermarks
        return bound is not None and generator is not None and generator.current() > bound

    def set_bound(self, bound: int | None) -> None:
        """The coordinator moved the group's bound (None: none)."""
        self.bound = bound
        self._wake_up()

    async def wait_unpaused(self) -> None:
        """Return when a paused source may have something to do: a new bound, or a tick
        (``due``) to handle."""
        if self.paused and not self.due:
            await self._wake.wait()

    def _wake_up(self) -> None:
        event, self._wake = self._wake, anyio.Event()
        event.set()

    def source_ended(self) -> None:
        """A source's input ended: it holds its group back no more."""
        self._report_progress(ended=True)

    def _report_progress(self, *, ended: bool, tick: bool = False) -> None:
        generator = self._source_watermarks
        if self._report is None or generator is None:
            return
        progress = (generator.current(), generator.idle)
        paused = self.paused
        # A paused source repeats itself every tick: its bound may have been lost.
        if progress != self._reported or ended or (tick and paused):
            self._reported = progress
            self._report(progress[0], progress[1], ended, paused)

    # -- processing time ------------------------------------------------------------------------

    async def time_loop(self) -> None:
        """Ask the subtask loop to run ``on_time`` every interval, or sooner when a
        processing-time timer is due."""
        clock = self._clock
        while True:
            wait: float = self._interval_ms
            for op in self._timer_ops:
                due = op.next_processing_time()
                if due is not None:
                    wait = min(wait, max(due - clock.now_ms(), 0))
            if wait > 0:
                await clock.sleep_ms(wait)
            self._time_handled = anyio.Event()
            self.due = True
            if self._gate is not None:
                self._gate.interrupt()
            self._wake_up()
            await self._time_handled.wait()

    async def on_time(self) -> None:
        """Periodic work, on the subtask loop: the source's watermark, processing-time
        timers due."""
        self.due = False
        try:
            generator = self._source_watermarks
            if generator is not None:
                await self._apply(generator.on_tick(self._clock.monotonic_ms()))
                self._report_progress(ended=False, tick=True)
            now = self._clock.now_ms()
            for index, op in enumerate(self._chain.transforms):
                if not op.has_timers:
                    continue
                due = op.next_processing_time()
                if due is None or due > now:
                    continue
                self._pass_on(index, await op.on_processing_time(now))
        finally:
            self._time_handled.set()
