"""The window operator: keyed windows built on keyed state and timers.

State per key (table ``_windows``): ``{window id: entry}``, the id being the window's
start (``"g"`` for the global window), the entry ``[acc, pending]`` — plus the end for
a session window, whose end moves as it merges. ``acc`` is the window function's
accumulator (a count, a reduced value, an ``Aggregate`` accumulator, or the list of
records for ``process``); ``pending`` counts the records since the window last fired.
Each window has a timer at its last timestamp (``end - 1``) in its time domain; with
allowed lateness, a second one at ``end - 1 + lateness`` clears it. A timer fires
every window of its key that it has reached, so timers need no window id and stale
ones (of windows that merged or were purged) do nothing.

Per record: the assigner gives its windows; a window whose cleanup time the watermark
has passed is *late* for it. A record late for all its windows goes to the late side
output (or is dropped and counted). Otherwise it is added to each window; a window
whose end already passed (a late record within the allowed lateness) fires again at
once, and a ``Count(n)`` trigger fires and purges a window at its n-th record.
Whatever the trigger, a window that got records since it last fired fires at its end;
processing-time and global windows also fire at the end of input (the final
watermark), so a bounded job emits every window.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import orjson

from mesh.api.windowed import WindowSetup
from mesh.api.windows import Global, Session, Sliding, Tumbling, Window
from mesh.errors import RecordError
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.base import KeyedOperator, Output, RestoredState
from mesh.node.operators.records import RecordFailure, UserCodeError, describe_record
from mesh.node.operators.timers import EVENT_TIME, PROCESSING_TIME, KeyedTimerService
from mesh.state.backends import KeyedStateBackend
from mesh.time.watermarks import MAX_WATERMARK, NO_TIMESTAMP, NO_WATERMARK
from mesh.time.windows import merge_sessions, sliding_starts, tumbling_start

__all__ = ["WindowOperator"]

_GLOBAL = "g"


def _append(records: list[Any], record: Any) -> list[Any]:
    records.append(record)
    return records


_copy: Callable[[Any], Any] = lambda value: orjson.loads(orjson.dumps(value))  # noqa: E731


class WindowOperator(KeyedOperator):
    """``key_by(...).window(assigner).<function>()`` at runtime."""

    has_timers = True

    def __init__(
        self,
        spec: OperatorSpec,
        key_fn: Callable[[Any], Any],
        backend: KeyedStateBackend,
        setup: WindowSetup,
    ) -> None:
        super().__init__(spec, key_fn, backend)
        self.setup = setup
        self.windows: dict[Any, dict[str, list[Any]]] = backend.table("_windows")
        self.timers = KeyedTimerService(backend)
        assigner = setup.assigner
        self._global = isinstance(assigner, Global)
        self._session = isinstance(assigner, Session)
        self._event_time = not assigner.processing_time
        self._domain = EVENT_TIME if self._event_time or self._global else PROCESSING_TIME
        self._lateness = setup.lateness_ms if self._event_time else 0
        self._late_tag = setup.late_tag
        trigger = setup.trigger
        self._count_n: int | None = getattr(trigger, "n", None) if trigger.kind == "count" else None
        self._every: int | None = (
            getattr(trigger, "every_ms", None) if trigger.kind == "processing_time" else None
        )
        self._assign = self._assigner(assigner)
        self._size: int = getattr(assigner, "size_ms", 0)
        self._offset: int = getattr(assigner, "offset_ms", 0)
        # Event-time tumbling windows with the default trigger take the hot path.
        self._fast = (
            isinstance(assigner, Tumbling)
            and self._event_time
            and trigger.kind == "event_time"
            and setup.function != "process"
        )
        self._function = setup.function
        fn = setup.fn
        self._create, self._add, self._merge = self._accumulator(setup.function, fn)
        # Whether two windows may share a record object as accumulator (sliding reduce).
        self._copy_first = isinstance(assigner, Sliding) and setup.function == "reduce"

    # -- setup ----------------------------------------------------------------------------

    def _assigner(self, assigner: Any) -> Callable[[int], list[tuple[int, int]]]:
        if isinstance(assigner, Tumbling):
            size, offset = assigner.size_ms, assigner.offset_ms

            def tumbling(ts: int) -> list[tuple[int, int]]:
                start = tumbling_start(ts, size, offset)
                return [(start, start + size)]

            return tumbling
        if isinstance(assigner, Sliding):
            size, slide, offset = assigner.size_ms, assigner.slide_ms, assigner.offset_ms
            return lambda ts: [(s, s + size) for s in sliding_starts(ts, size, slide, offset)]
        if isinstance(assigner, Session):
            gap = assigner.gap_ms
            return lambda ts: [(ts, ts + gap)]
        # The global window ends after the end of time: its last timestamp is the final
        # watermark.
        return lambda ts: [(NO_WATERMARK, MAX_WATERMARK + 1)]

    @staticmethod
    def _accumulator(
        function: str, fn: Any
    ) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any], Callable[[Any, Any], Any]]:
        """(first(record), add(acc, record), merge(a, b)) of the window function."""
        if function == "count":
            return (lambda record: 1), (lambda acc, record: acc + 1), (lambda a, b: a + b)
        if function == "reduce":
            return (lambda record: record), fn, fn
        if function == "aggregate":
            return (lambda record: fn.add(fn.create(), record)), fn.add, fn.merge
        # process: the window's records (appended in place: the key's windows are a
        # private copy while a snapshot is being written).
        return (lambda record: [record]), _append, (lambda a, b: [*a, *b])

    async def initialize(self, restored: RestoredState | None) -> None:
        await super().initialize(restored)
        if restored is not None:
            await self.timers.restore()

    # -- records ----------------------------------------------------------------------------

    def process(self, batch: list[Any]) -> list[Any]:
        return self.process_timed(batch, [NO_TIMESTAMP] * len(batch))[0]

    def process_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        out: list[Any] = []
        times: list[int] = []
        event_time = self._event_time and not self._global
        now = self.backend.clock.now_ms() if self.backend is not None else 0
        start = self._add_tumbling(batch, stamps) if self._fast else 0
        for index in range(start, len(batch)):
            record = batch[index]
            try:
                key = self._key(record)
                if event_time:
                    ts = stamps[index]
                    if ts == NO_TIMESTAMP:
                        raise RecordError(
                            f"operator {self.spec.uid!r} ({self.spec.name}): record "
                            f"{describe_record(record)} has no event timestamp (its source has "
                            "no WatermarkStrategy)"
                        )
                else:
                    ts = now
                self._add_record(key, record, ts, stamps[index], now, out, times)
            except RecordError as error:
                raise RecordFailure(error, index, out, times) from error.__cause__
        return out, times

    def _add_tumbling(self, batch: list[Any], stamps: list[int]) -> int:
        """The hot path of event-time tumbling windows with the default trigger: adds
        records until one needs more care (late, no timestamp, a key or function that
        raises, a window to fire now); returns how many it added."""
        table = self.windows
        key_fn = self.key_fn
        size, offset = self._size, self._offset
        watermark, lateness = self.watermark, self._lateness
        register = self.timers.event.register
        add = self._add
        create = self._create
        count = self._function == "count"
        fresh: set[Hashable] = set()  # keys whose windows were copied for a snapshot
        copy = self.backend is not None and self.backend.snapshots_in_flight > 0
        # [lo, hi): the window of the record before, whose next records need no checks:
        # not late, and a timestamp (a window reaching down to NO_TIMESTAMP is never kept).
        lo = hi = max_ts = 0
        wid = ""
        done = 0
        try:
            for record, ts in zip(batch, stamps, strict=True):
                if not lo <= ts < hi:
                    if ts == NO_TIMESTAMP:
                        break
                    start = ts - (ts - offset) % size
                    max_ts = start + size - 1
                    if max_ts <= watermark:
                        break  # late (within the lateness or not)
                    wid = str(start)
                    lo, hi = (start, max_ts + 1) if start > NO_TIMESTAMP else (0, 0)
                key = key_fn(record)
                wins = table.get(key)
                if wins is None:
                    wins = table[key] = {}
                elif copy and key not in fresh:
                    wins = table[key] = _copy(wins)
                    fresh.add(key)
                entry = wins.get(wid)
                if entry is None:
                    wins[wid] = [1 if count else create(record), 1]
                    register(key, max_ts)
                    if lateness:
                        register(key, max_ts + lateness)
                elif count:
                    entry[0] += 1
                    entry[1] += 1
                else:
                    entry[0] = add(entry[0], record)
                    entry[1] += 1
                done += 1
        except UserCodeError:
            pass  # the record at ``done`` goes the careful way, which names it
        return done

    def _wins(self, key: Hashable) -> dict[str, list[Any]]:
        """The key's windows, safe to change (a snapshot in flight keeps the old ones)."""
        table = self.windows
        wins = table.get(key)
        if wins is None:
            wins = table[key] = {}
        elif self.backend is not None and self.backend.snapshots_in_flight:
            wins = table[key] = _copy(wins)
        return wins

    def _late(self, max_ts: int) -> bool:
        return self._event_time and max_ts + self._lateness <= self.watermark

    def _add_record(
        self,
        key: Hashable,
        record: Any,
        ts: int,
        stamp: int,
        now: int,
        out: list[Any],
        times: list[int],
    ) -> None:
        if self._session:
            self._add_to_session(key, record, ts, stamp, now, out, times)
            return
        assigned = [w for w in self._assign(ts) if not self._late(w[1] - 1)]
        if not assigned:
            self._late_record(record, stamp)
            return
        wins = self._wins(key)
        # Compute every window's new accumulator first: a function that raises leaves
        # the state as it was.
        updates: list[tuple[int, int, str, Any, list[Any] | None]] = []
        try:
            for number, (start, end) in enumerate(assigned):
                wid = _GLOBAL if self._global else str(start)
                entry = wins.get(wid)
                if entry is None:
                    first = record if number == 0 or not self._copy_first else _copy(record)
                    acc = self._create(first)
                else:
                    acc = self._add(entry[0], record)
                updates.append((start, end, wid, acc, entry))
        except UserCodeError as exc:
            if not wins:
                del self.windows[key]
            raise self._error("window function raised", record, exc) from exc
        for start, end, wid, acc, entry in updates:
            if entry is None:
                entry = wins[wid] = [acc, 1]
                self._set_timers(key, end - 1, now)
            else:
                entry[0] = acc
                entry[1] += 1
            self._after_add(key, wins, wid, entry, start, end, out, times)

    def _add_to_session(
        self,
        key: Hashable,
        record: Any,
        ts: int,
        stamp: int,
        now: int,
        out: list[Any],
        times: list[int],
    ) -> None:
        (start, end) = self._assign(ts)[0]
        existing = self.windows.get(key) or {}
        sessions = {(int(wid), entry[2]): wid for wid, entry in existing.items()}
        (lo, hi), absorbed = merge_sessions(list(sessions), start, end)
        if self._late(hi - 1):
            self._late_record(record, stamp)
            return
        # A private copy while a snapshot is written: merge functions may change their
        # first argument in place.
        wins = self._wins(key)
        entries = [wins[sessions[session]] for session in sorted(absorbed)]
        try:
            acc = self._create(record)
            for entry in reversed(entries):  # latest first: acc is the newest part
                acc = self._merge(entry[0], acc)
        except UserCodeError as exc:
            if not wins:
                del self.windows[key]
            raise self._error("window function raised", record, exc) from exc
        pending = sum(entry[1] for entry in entries)
        for session in absorbed:
            del wins[sessions[session]]
        wid = str(lo)
        entry = wins[wid] = [acc, pending + 1, hi]
        self._set_timers(key, hi - 1, now)
        self._after_add(key, wins, wid, entry, lo, hi, out, times)

    def _set_timers(self, key: Hashable, max_ts: int, now: int) -> None:
        timers = self.timers
        if self._domain == EVENT_TIME:
            timers.event.register(key, max_ts)
            if self._lateness:
                timers.event.register(key, max_ts + self._lateness)
        else:
            timers.processing.register(key, max_ts)
            timers.event.register(key, MAX_WATERMARK)  # the end of input flushes it
        if self._every is not None:
            timers.processing.register(key, now - now % self._every + self._every)

    def _after_add(
        self,
        key: Hashable,
        wins: dict[str, list[Any]],
        wid: str,
        entry: list[Any],
        start: int,
        end: int,
        out: list[Any],
        times: list[int],
    ) -> None:
        if self._event_time and not self._global and end - 1 <= self.watermark:
            # A late record within the allowed lateness: the window fires again now.
            self._emit(key, wid, entry, start, end, out, times, keep=True)
        elif self._count_n is not None and entry[1] >= self._count_n:
            self._emit(key, wid, entry, start, end, out, times, keep=False)
            del wins[wid]

    def _late_record(self, record: Any, stamp: int) -> None:
        self.late_records += 1
        if self._late_tag is None:
            self.late_dropped += 1
        else:
            self.side_records.append((self._late_tag, record, stamp))

    # -- firing -----------------------------------------------------------------------------

    def _emit(
        self,
        key: Hashable,
        wid: str,
        entry: list[Any],
        start: int,
        end: int,
        out: list[Any],
        times: list[int],
        *,
        keep: bool,
    ) -> None:
        """Emit a window's result; ``keep``: the window stays (its accumulator must not
        be shared with what was emitted)."""
        entry[1] = 0
        acc = entry[0]
        function = self._function
        window_start, window_end = (None, None) if self._global else (start, end)
        stamp = end - 1
        if function == "count":
            out.append(
                {"key": key, "window_start": window_start, "window_end": window_end, "count": acc}
            )
            times.append(stamp)
            return
        try:
            if function == "process":
                made = self.setup.fn(key, Window(window_start, window_end), list(acc))
                produced = [] if made is None else list(made)
            else:
                value = self.setup.fn.result(acc) if function == "aggregate" else acc
                produced = [
                    {
                        "key": key,
                        "window_start": window_start,
                        "window_end": window_end,
                        "value": value,
                    }
                ]
        except UserCodeError as exc:
            raise RecordError(
                f"operator {self.spec.uid!r} ({self.spec.name}): the window function raised "
                f"{type(exc).__name__}: {exc} — firing key {key!r}, window "
                f"[{window_start}, {window_end})"
            ) from exc
        if keep and function != "process":
            produced = _copy(produced)
        out.extend(produced)
        times.extend([stamp] * len(produced))

    def _bounds(self, wid: str, entry: list[Any]) -> tuple[int, int]:
        if wid == _GLOBAL:
            return NO_WATERMARK, MAX_WATERMARK + 1
        start = int(wid)
        if self._session:
            return start, int(entry[2])
        return start, start + self._size

    def _sorted(self, wins: dict[str, list[Any]]) -> list[tuple[str, list[Any]]]:
        items = list(wins.items())
        if len(items) > 1:
            items.sort(key=lambda item: self._bounds(*item))
        return items

    def _fire(self, key: Hashable, ts: int, domain: str, out: list[Any], stamps: list[int]) -> None:
        if not self.windows.get(key):
            return
        wins = self._wins(key)
        if domain == EVENT_TIME and ts == MAX_WATERMARK:
            # The end of input: whatever is still open fires and goes.
            for wid, entry in self._sorted(wins):
                if entry[1]:
                    start, end = self._bounds(wid, entry)
                    self._emit(key, wid, entry, start, end, out, stamps, keep=False)
                del wins[wid]
        elif domain == self._domain:
            if self._size:
                # Fixed-size windows: the timer is the end (or cleanup) of one window.
                for max_ts in dict.fromkeys((ts, ts - self._lateness)):
                    wid = str(max_ts + 1 - self._size)
                    found = wins.get(wid)
                    if found is not None:
                        self._reached(key, wins, wid, found, ts, out, stamps)
            else:
                for wid, entry in self._sorted(wins):
                    self._reached(key, wins, wid, entry, ts, out, stamps)
        if domain == PROCESSING_TIME and self._every is not None and wins:
            # Early firings of the windows still open, and the next one.
            for wid, entry in self._sorted(wins):
                if entry[1]:
                    start, end = self._bounds(wid, entry)
                    self._emit(key, wid, entry, start, end, out, stamps, keep=True)
            self.timers.processing.register(key, ts + self._every)
        if not wins:
            del self.windows[key]

    def _fire_tumbling(
        self, keys: list[Hashable], ts: int, out: list[Any], stamps: list[int]
    ) -> None:
        """``_fire`` for the hot path's windows (event-time tumbling, default trigger), for
        all keys with a timer at ``ts``: such a timer is the end or the cleanup time of
        one window, found from ``ts`` alone. Sets no timers (see ``fire_groups``)."""
        if ts == MAX_WATERMARK:
            for key in keys:
                self._fire(key, ts, EVENT_TIME, out, stamps)
            return
        windows = self.windows
        copy = self.backend is not None and self.backend.snapshots_in_flight > 0
        size, lateness = self._size, self._lateness
        # (start, window id, cleanup time) of the window ending at ts, and of the one
        # whose allowed lateness ends at ts.
        reached = [
            (max_ts + 1 - size, str(max_ts + 1 - size), max_ts + lateness)
            for max_ts in ((ts, ts - lateness) if lateness else (ts,))
        ]
        emit = self._emit
        for key in keys:
            wins = windows.get(key)
            if not wins:
                continue
            if copy:
                wins = windows[key] = _copy(wins)
            for start, wid, cleanup in reached:
                entry = wins.get(wid)
                if entry is None:
                    continue
                if entry[1]:
                    emit(key, wid, entry, start, start + size, out, stamps, keep=cleanup > ts)
                if cleanup <= ts:
                    del wins[wid]
            if not wins:
                del windows[key]

    def _reached(
        self,
        key: Hashable,
        wins: dict[str, list[Any]],
        wid: str,
        entry: list[Any],
        ts: int,
        out: list[Any],
        stamps: list[int],
    ) -> None:
        """Time ``ts`` came: if it passed the window's end, the window fires (if it got
        records since it last did), and it goes once its allowed lateness passed too."""
        start, end = self._bounds(wid, entry)
        max_ts = end - 1
        if max_ts > ts:
            return
        cleanup = max_ts + self._lateness
        if entry[1]:
            self._emit(key, wid, entry, start, end, out, stamps, keep=cleanup > ts)
        if cleanup <= ts:
            del wins[wid]

    async def on_watermark(self, watermark: int) -> Output:
        self.watermark = watermark
        if self._fast:
            return await self.timers.fire_groups(EVENT_TIME, watermark, self._fire_tumbling)
        return await self.timers.fire(EVENT_TIME, watermark, self._fire)

    async def on_processing_time(self, now_ms: int) -> Output:
        return await self.timers.fire(PROCESSING_TIME, now_ms, self._fire)

    def next_processing_time(self) -> int | None:
        return self.timers.next_processing_time()
