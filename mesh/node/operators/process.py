"""Process functions at runtime: ``process(fn)`` and ``key_by(...).process(fn)``.

The user's function (or ``ProcessFunction``) runs once per record with a ``ctx``. In a
keyed process function ``ctx`` also has the key, keyed state and timers; a fired timer
calls ``on_timer(timestamp, ctx)``. What a function returns or yields is its output;
``ctx.output(tag, value)`` sends a record to a side output. On a stream with event time,
``ctx.timestamp`` is the record's timestamp and output records inherit it; a fired
event-time timer's output carries the timer's time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from mesh.api.functions import KeyedProcessFunction, ProcessFunction
from mesh.errors import RecordError
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.base import KeyedOperator, Output, RestoredState, RuntimeOperator
from mesh.node.operators.records import RecordFailure, UserCodeError
from mesh.node.operators.timers import EVENT_TIME, PROCESSING_TIME, KeyedTimerService, TimerHandle
from mesh.state.backends import KeyedStateBackend
from mesh.state.primitives import StateAccessor
from mesh.time.durations import parse_duration
from mesh.time.watermarks import NO_TIMESTAMP, NO_WATERMARK

__all__ = ["KeyedProcessOperator", "ProcessContext", "ProcessOperator"]


class ProcessContext:
    """``ctx`` of a process function."""

    def __init__(
        self,
        state: StateAccessor | None,
        subtask_index: int,
        parallelism: int,
        side_records: list[tuple[str, Any, int]],
    ) -> None:
        self._state = state
        self._timers: TimerHandle | None = None
        self._side = side_records
        self._stamp = NO_TIMESTAMP  # the timestamp side outputs get
        self.key: Any = None
        self.timestamp: int | None = None  # the record's event time (None: it has none)
        self.watermark: int | None = None  # the operator's event time (None: none yet)
        self.time_domain: str | None = None  # in on_timer: "event_time"/"processing_time"
        self.subtask_index = subtask_index
        self.parallelism = parallelism

    @property
    def state(self) -> StateAccessor:
        """Keyed state of the current key."""
        if self._state is None:
            raise RecordError("ctx.state needs a keyed stream: use key_by(...).process(...)")
        return self._state

    @property
    def timers(self) -> TimerHandle:
        """Timers of the current key: ``event_time(ts)``, ``processing_time(ts)``,
        ``delete_event_time(ts)``, ``delete_processing_time(ts)``."""
        if self._timers is None:
            raise RecordError(
                "ctx.timers needs a keyed stream: use key_by(...).process(KeyedProcessFunction)"
            )
        return self._timers

    def output(self, tag: str, value: Any) -> None:
        """Emit ``value`` to the side output ``tag`` (read with ``.side_output(tag)``)."""
        if not isinstance(tag, str) or not tag:
            raise RecordError(f"ctx.output() needs a non-empty string tag, got {tag!r}")
        self._side.append((tag, value, self._stamp))

    def _at(self, stamp: int) -> None:
        self._stamp = stamp
        self.timestamp = None if stamp == NO_TIMESTAMP else stamp


def parse_ttl(value: Any) -> int | None:
    """A state TTL as user code gives it, in ms (None: no TTL)."""
    if value is None:
        return None
    try:
        ms = parse_duration(value, what="ttl")
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    if ms <= 0:
        raise RecordError(f"ttl must be above zero, got {value!r}")
    return ms


class ProcessOperator(RuntimeOperator):
    """``process(fn)``: the user's function (or ProcessFunction) per record, with a ctx."""

    def __init__(self, spec: OperatorSpec, fn: Any, ctx: ProcessContext) -> None:
        super().__init__(spec)
        self.function = fn
        self._call = fn.process if isinstance(fn, ProcessFunction) else fn
        self.ctx = ctx
        ctx._side = self.side_records

    @classmethod
    def build(
        cls, spec: OperatorSpec, fn: Any, subtask_index: int, parallelism: int
    ) -> ProcessOperator:
        """The operator with a fresh context."""
        return cls(spec, fn, ProcessContext(None, subtask_index, parallelism, []))

    def open(self) -> None:
        if isinstance(self.function, ProcessFunction):
            try:
                self.function.open(self.ctx)
            except UserCodeError as exc:
                raise RecordError(
                    f"operator {self.spec.uid!r} ({self.spec.name}): open() raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    def collect(self, call: Callable[[], Any], out: list[Any]) -> None:
        """Append what ``call()`` returns or yields to ``out``; if it raises, nothing it
        made (output or side output) stays, and the error propagates."""
        mark, side_mark = len(out), len(self.side_records)
        try:
            result = call()
            if result is not None:
                out.extend(result)
        except UserCodeError:
            del out[mark:]
            del self.side_records[side_mark:]
            raise

    def one(self, record: Any, out: list[Any]) -> None:
        """Run the function on ``record``, appending its output to ``out``."""
        try:
            self.collect(lambda: self._call(record, self.ctx), out)
        except UserCodeError as exc:
            raise self._error("raised", record, exc) from exc

    def process(self, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        self.ctx._at(NO_TIMESTAMP)
        for index, record in enumerate(batch):
            try:
                self.one(record, out)
            except RecordError as error:
                raise RecordFailure(error, index, out) from error.__cause__
        return out

    def process_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        out: list[Any] = []
        times: list[int] = []
        ctx = self.ctx
        for index, record in enumerate(batch):
            stamp = stamps[index]
            ctx._at(stamp)
            mark = len(out)
            try:
                self.one(record, out)
            except RecordError as error:
                raise RecordFailure(error, index, out, times) from error.__cause__
            times.extend([stamp] * (len(out) - mark))
        return out, times

    async def on_watermark(self, watermark: int) -> Output:
        self.watermark = watermark
        self.ctx.watermark = None if watermark == NO_WATERMARK else watermark
        return [], []

    def close(self) -> None:
        if isinstance(self.function, ProcessFunction):
            self.function.close()


class KeyedProcessOperator(KeyedOperator):
    """``key_by(...).process(fn)``: a process function with ``ctx.key``, ``ctx.state``
    and ``ctx.timers``."""

    has_timers = True

    def __init__(
        self,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        backend: KeyedStateBackend,
        fn: Any,
        ctx: ProcessContext,
        accessor: StateAccessor,
    ) -> None:
        super().__init__(spec, key_fn, backend)
        self._inner = ProcessOperator(spec, fn, ctx)
        self.side_records = self._inner.side_records
        self._accessor = accessor
        self.ctx = ctx
        self.timers = KeyedTimerService(backend)
        ctx._timers = TimerHandle(self.timers, lambda: accessor.key)
        on_timer = getattr(fn, "on_timer", None) if isinstance(fn, KeyedProcessFunction) else None
        self._on_timer: Callable[[int, Any], Any] | None = on_timer

    @classmethod
    def build(
        cls,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        backend: KeyedStateBackend,
        fn: Any,
        subtask_index: int,
        parallelism: int,
    ) -> KeyedProcessOperator:
        """The operator with its state accessor and context."""
        accessor = StateAccessor(backend, parse_ttl)
        ctx = ProcessContext(accessor, subtask_index, parallelism, [])
        return cls(spec, key_fn, backend, fn, ctx, accessor)

    def open(self) -> None:
        self._inner.open()

    async def initialize(self, restored: RestoredState | None) -> None:
        await super().initialize(restored)
        if restored is not None:
            await self.timers.restore()

    def process(self, batch: list[Any]) -> list[Any]:
        out: list[Any] = []
        ctx = self.ctx
        ctx._at(NO_TIMESTAMP)
        ctx.time_domain = None
        accessor = self._accessor
        one = self._inner.one
        for index, record in enumerate(batch):
            try:
                key = self._key(record)
                ctx.key = accessor.key = key
                one(record, out)
            except RecordError as error:
                raise RecordFailure(error, index, out) from error.__cause__
        return out

    def process_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        out: list[Any] = []
        times: list[int] = []
        ctx = self.ctx
        ctx.time_domain = None
        accessor = self._accessor
        one = self._inner.one
        for index, record in enumerate(batch):
            stamp = stamps[index]
            mark = len(out)
            try:
                key = self._key(record)
                ctx.key = accessor.key = key
                ctx._at(stamp)
                one(record, out)
            except RecordError as error:
                raise RecordFailure(error, index, out, times) from error.__cause__
            times.extend([stamp] * (len(out) - mark))
        return out, times

    def _fire(
        self, key: Hashable, timestamp: int, domain: str, out: list[Any], stamps: list[int]
    ) -> None:
        ctx = self.ctx
        ctx.key = self._accessor.key = key
        ctx.time_domain = domain
        ctx._at(timestamp if domain == EVENT_TIME else NO_TIMESTAMP)
        on_timer = self._on_timer
        if on_timer is None:
            return  # a plain function has no on_timer: its timers do nothing
        mark = len(out)
        try:
            self._inner.collect(lambda: on_timer(timestamp, ctx), out)
        except UserCodeError as exc:
            raise RecordError(
                f"operator {self.spec.uid!r} ({self.spec.name}) on_timer raised "
                f"{type(exc).__name__}: {exc} — for key {key!r} at {domain} {timestamp}"
            ) from exc
        stamps.extend([ctx._stamp] * (len(out) - mark))

    async def on_watermark(self, watermark: int) -> Output:
        self.watermark = watermark
        self.ctx.watermark = None if watermark == NO_WATERMARK else watermark
        return await self.timers.fire(EVENT_TIME, watermark, self._fire)

    async def on_processing_time(self, now_ms: int) -> Output:
        return await self.timers.fire(PROCESSING_TIME, now_ms, self._fire)

    def next_processing_time(self) -> int | None:
        return self.timers.next_processing_time()

    def close(self) -> None:
        self._inner.close()
