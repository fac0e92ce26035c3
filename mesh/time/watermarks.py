"""Watermarks: how event time moves forward (pure state machines: no I/O, no clock reads).

A watermark ``w`` says "no more records with a timestamp at or below ``w``". Two
machines make and combine them:

* ``SourceWatermarks`` — one source subtask's generator for
  ``WatermarkStrategy.bounded(max_delay, ..., idle_timeout)``: it tracks the largest
  timestamp read so far and, at each periodic tick, offers ``max_seen - max_delay - 1``
  (Flink's convention: a record exactly ``max_delay`` behind the maximum is still on
  time); its subtask also sends it after each batch it read (``poll``), so event time
  keeps up with fast sources. When it reads nothing for ``idle_timeout`` it declares
  itself idle, so it does not hold back the event time of the subtasks it feeds; the
  next record makes it active again.
* ``SplitWatermarks`` — the same generator kept per split, for a reader that tracks
  event time per split (a Kafka partition each: Flink's per-partition watermarks). Each
  split has its own ``max_seen - max_delay - 1`` and goes idle on its own; the subtask's
  watermark is the smallest over the splits that are not idle (a split that has read
  nothing yet holds it at ``NO_WATERMARK``, as a fresh partition does, until it is
  idle), and the subtask is idle when every split is (or it holds none). A removed split
  (a finished partition) holds nothing back any more.
* ``WatermarkValve`` — a consumer subtask's view of its input channels. Its watermark
  is the minimum over the channels that are neither idle nor ended; when every channel
  is idle the subtask is idle too, and the largest channel watermark goes through (no
  channel will hold it back). A channel that becomes active again counts in the minimum
  again. An ended channel counts as the end of time.

Both only ever hand out increasing watermarks: the output never goes backwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_WATERMARK",
    "NO_TIMESTAMP",
    "NO_WATERMARK",
    "Progress",
    "SourceWatermarks",
    "SplitWatermarks",
    "WatermarkValve",
]

#: Before any watermark: event time has not started.
NO_WATERMARK = -(2**63)
#: The end of event time (end of input): every event-time timer fires.
MAX_WATERMARK = 2**63 - 1
#: The timestamp of a record that has none (it came from a source without watermarks).
NO_TIMESTAMP = -(2**63)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a watermark machine asks its subtask to send on, in this order."""

    idle: bool | None = None  # a change of idle status (None: no change)
    watermark: int | None = None  # a new, larger watermark (None: none)

    def __bool__(self) -> bool:
        return self.idle is not None or self.watermark is not None


_NOTHING = Progress()


class SourceWatermarks:
    """The bounded-out-of-orderness generator of one source subtask, with idleness."""

    def __init__(self, max_delay_ms: int, idle_timeout_ms: int | None, now_ms: float) -> None:
        if max_delay_ms < 0:
            raise ValueError(f"max_delay must not be negative, got {max_delay_ms}")
        self.max_delay_ms = max_delay_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.max_seen = NO_TIMESTAMP
        self.emitted = NO_WATERMARK  # the last watermark handed out
        self.idle = False
        self._last_active = now_ms  # when records last came (or when the subtask started)

    def on_records(self, max_timestamp: int, now_ms: float) -> Progress:
        """Records were read; ``max_timestamp`` is the largest of their timestamps.

        Returns ``Progress(idle=False)`` when the subtask was idle: the caller sends that
        before the records.
        """
        if max_timestamp > self.max_seen:
            self.max_seen = max_timestamp
        self._last_active = now_ms
        if self.idle:
            self.idle = False
            return Progress(idle=False)
        return _NOTHING

    def current(self) -> int:
        """The watermark the records read so far allow."""
        if self.max_seen == NO_TIMESTAMP:
            return NO_WATERMARK
        return self.max_seen - self.max_delay_ms - 1

    def on_tick(self, now_ms: float) -> Progress:
        """The periodic tick: a larger watermark to send, or a switch to idle."""
        if self.idle:
            return _NOTHING
        timeout = self.idle_timeout_ms
        if timeout is not None and now_ms - self._last_active >= timeout:
            self.idle = True
            return Progress(idle=True)
        return self.poll()

    def poll(self) -> Progress:
        """A larger watermark to send, if the records read allow one."""
        watermark = self.current()
        if watermark > self.emitted:
            self.emitted = watermark
            return Progress(watermark=watermark)
        return _NOTHING


@dataclass(slots=True)
class _Split:
    last_active: float  # when records last came (or when the split was added)
    max_seen: int = NO_TIMESTAMP
    idle: bool = False

    def watermark(self, max_delay_ms: int) -> int:
        if self.max_seen == NO_TIMESTAMP:
            return NO_WATERMARK
        return self.max_seen - max_delay_ms - 1


class SplitWatermarks:
    """The bounded-out-of-orderness generator of one source subtask, kept per split.

    It offers its subtask what ``SourceWatermarks`` does (``on_records``, ``on_tick``,
    ``poll``, ``current``, ``idle``, ``emitted``), with records counted for the split they
    came from, and ``set_splits`` when the reader's splits change. ``emitted`` and
    ``idle`` are what the subtask was told to send; ``emitted`` never goes backwards (a
    split that wakes up with old timestamps does not lower it). A split's idleness is
    decided at ticks only, as in ``SourceWatermarks``.
    """

    def __init__(
        self,
        max_delay_ms: int,
        idle_timeout_ms: int | None,
        now_ms: float,
        splits: Iterable[str] = (),
        *,
        emitted: int = NO_WATERMARK,
        idle: bool = False,
    ) -> None:
        """``emitted`` and ``idle``: what the subtask already sent, when this generator
        takes over from another one."""
        if max_delay_ms < 0:
            raise ValueError(f"max_delay must not be negative, got {max_delay_ms}")
        self.max_delay_ms = max_delay_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.emitted = emitted  # the last watermark handed out
        self.idle = idle  # the idle status handed out
        self._splits = {split: _Split(now_ms) for split in splits}

    @property
    def split_ids(self) -> list[str]:
        """The splits held now."""
        return list(self._splits)

    def split_watermark(self, split: str) -> tuple[int, bool]:
        """One split's own watermark and whether it is idle."""
        state = self._splits[split]
        return state.watermark(self.max_delay_ms), state.idle

    def set_splits(self, ids: Iterable[str], now_ms: float) -> None:
        """The reader holds these splits now. A new split starts active at ``now_ms``
        with nothing read; a split no longer held stops counting. What that changes (a
        larger watermark, a change of idle status) comes out of the next ``poll`` or
        ``on_tick``."""
        wanted = dict.fromkeys(ids)
        splits = self._splits
        if wanted.keys() == splits.keys():
            return
        for split in [s for s in splits if s not in wanted]:
            del splits[split]
        for split in wanted:
            if split not in splits:
                splits[split] = _Split(now_ms)

    def on_records(self, max_timestamp: int, now_ms: float, split: str) -> Progress:
        """Records of ``split`` were read; ``max_timestamp`` is the largest of their
        timestamps (a split not held yet is added).

        Returns ``Progress(idle=False)`` when the subtask was idle: the caller sends that
        before the records.
        """
        state = self._splits.get(split)
        if state is None:
            state = self._splits[split] = _Split(now_ms)
        if max_timestamp > state.max_seen:
            state.max_seen = max_timestamp
        state.last_active = now_ms
        state.idle = False
        if self.idle:
            self.idle = False
            return Progress(idle=False)
        return _NOTHING

    def current(self) -> int:
        """The watermark the records read so far allow: the smallest over the splits
        that are not idle (when every split is idle: the last one handed out)."""
        delay = self.max_delay_ms
        active = [s.watermark(delay) for s in self._splits.values() if not s.idle]
        return min(active) if active else self.emitted

    def on_tick(self, now_ms: float) -> Progress:
        """The periodic tick: splits silent for ``idle_timeout`` become idle; then a
        larger watermark to send, or a change of idle status."""
        timeout = self.idle_timeout_ms
        if timeout is not None:
            for state in self._splits.values():
                if not state.idle and now_ms - state.last_active >= timeout:
                    state.idle = True
        return self.poll()

    def poll(self) -> Progress:
        """A larger watermark to send, if the records read allow one, or a change of idle
        status (after ``set_splits``)."""
        delay = self.max_delay_ms
        active = [s.watermark(delay) for s in self._splits.values() if not s.idle]
        if not active:  # every split idle, or none held: nothing holds event time back
            if self.idle:
                return _NOTHING
            self.idle = True
            return Progress(idle=True)
        status: bool | None = None
        if self.idle:
            self.idle, status = False, False
        watermark = min(active)
        if watermark > self.emitted:
            self.emitted = watermark
            return Progress(idle=status, watermark=watermark)
        return Progress(idle=status) if status is not None else _NOTHING


@dataclass(slots=True)
class _Channel:
    watermark: int = NO_WATERMARK
    idle: bool = False
    ended: bool = False


class WatermarkValve:
    """Combines the watermarks and idle statuses of a subtask's input channels."""

    def __init__(self, channel_ids: list[int]) -> None:
        self._channels = {channel_id: _Channel() for channel_id in channel_ids}
        self.watermark = NO_WATERMARK  # the last watermark handed out
        self.idle = False  # whether the subtask told its consumers it is idle

    def _channel(self, channel_id: int) -> _Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise KeyError(f"watermark from unknown input channel {channel_id}")
        return channel

    def on_watermark(self, channel_id: int, watermark: int) -> Progress:
        """A channel's watermark arrived (a smaller one than before is ignored)."""
        channel = self._channel(channel_id)
        if watermark > channel.watermark:
            channel.watermark = watermark
        return self._update()

    def on_status(self, channel_id: int, idle: bool) -> Progress:
        """A channel became idle, or active again."""
        self._channel(channel_id).idle = idle
        return self._update()

    def on_end(self, channel_id: int) -> Progress:
        """A channel ended: it holds nothing back any more."""
        channel = self._channel(channel_id)
        channel.ended = True
        channel.watermark = MAX_WATERMARK
        return self._update()

    def _update(self) -> Progress:
        live = [c for c in self._channels.values() if not c.ended]
        active = [c for c in live if not c.idle]
        status: bool | None = None
        if active:
            candidate = min(c.watermark for c in active)
            if self.idle:
                self.idle, status = False, False
        elif live:  # every live channel is idle: none holds the others back
            candidate = max(c.watermark for c in live)
            if not self.idle:
                self.idle, status = True, True
        else:
            candidate = MAX_WATERMARK
        if candidate > self.watermark:
            self.watermark = candidate
            return Progress(idle=status, watermark=candidate)
        return Progress(idle=status) if status is not None else _NOTHING
