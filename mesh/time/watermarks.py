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
* ``WatermarkValve`` — a consumer subtask's view of its input channels. Its watermark
  is the minimum over the channels that are neither idle nor ended; when every channel
  is idle the subtask is idle too, and the largest channel watermark goes through (no
  channel will hold it back). A channel that becomes active again counts in the minimum
  again. An ended channel counts as the end of time.

Both only ever hand out increasing watermarks: the output never goes backwards.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_WATERMARK",
    "NO_TIMESTAMP",
    "NO_WATERMARK",
    "Progress",
    "SourceWatermarks",
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
