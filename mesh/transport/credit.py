"""Credit-based flow control, both sides, as pure state machines (no I/O, no clock).

Theory of operation (Flink's scheme, FLINK-7282):

* A credit is one buffer slot the receiver has reserved for a channel. The sender of a
  channel may send a DATA buffer only while it holds credit; each buffer spends one.
  Events (watermarks, barriers, end-of-partition) are free but keep their place in the
  channel's FIFO, so they never overtake data.
* Every channel starts with ``exclusive`` credits that both sides know without a
  message (the job's configuration fixes them), so no frame is sent before its
  receiver exists. The receiver also owns a pool of ``floating`` slots shared by the
  channels of one input gate.
* Each DATA buffer carries the sender's backlog (buffers still queued behind it). The
  receiver hands floating slots to a channel while its announced-but-unused credit is
  below ``backlog + exclusive``, so busy channels get more room than idle ones.
* When the consumer has processed a buffer, its slot is free again: an exclusive slot is
  re-announced to the same channel; a floating one goes back to the pool when the
  channel has enough, and from there to whichever channel is waiting.

Because what is on the wire always has a reserved slot, the receiver never stops
reading the shared connection, and one slow channel cannot block the others.

Invariants (checked by property tests):
* sender: ``credit >= 0``; data is sent only with ``credit > 0``;
  ``granted == data_sent + credit``.
* receiver, per channel: ``announced + queued == exclusive + floating_held`` (every slot
  is either promised to the sender or holds a buffer), and the pool plus every
  channel's ``floating_held`` always equals ``floating``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mesh.errors import ChannelError

__all__ = ["CreditLedger", "InputCredits", "LedgerStats"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """A snapshot of a sender ledger."""

    credit: int
    backlog: int
    queued: int
    granted: int
    data_sent: int


class CreditLedger(Generic[T]):
    """Sender side of one channel: a FIFO of pending items and the credit to send them.

    ``offer`` queues an item; ``pop_sendable`` hands out the next item that may go now
    (an event, or data while credit lasts) with the backlog to report alongside it.
    """

    __slots__ = ("_credit", "_data_sent", "_granted", "_queue", "_queued_data")

    def __init__(self, initial_credit: int) -> None:
        if initial_credit < 1:
            raise ValueError(f"initial credit must be >= 1, got {initial_credit}")
        # Credits the receiver has promised and we have not spent; never negative.
        self._credit = initial_credit
        # Total credits ever received, initial included (for the accounting invariant).
        self._granted = initial_credit
        # DATA buffers sent so far.
        self._data_sent = 0
        # Pending (is_data, item) in send order; events keep their place behind data.
        self._queue: deque[tuple[bool, T]] = deque()
        # How many queued items are data: the backlog reported to the receiver.
        self._queued_data = 0

    @property
    def credit(self) -> int:
        """Credits available now."""
        return self._credit

    @property
    def backlog(self) -> int:
        """DATA buffers waiting to be sent."""
        return self._queued_data

    @property
    def queued(self) -> int:
        """Items (data and events) waiting to be sent."""
        return len(self._queue)

    def add_credit(self, credits: int) -> None:
        """The receiver announced ``credits`` more slots."""
        if credits <= 0:
            raise ChannelError(f"credit announcement must be positive, got {credits}")
        self._credit += credits
        self._granted += credits

    def offer(self, item: T, *, is_data: bool) -> None:
        """Queue ``item`` behind everything offered before it."""
        self._queue.append((is_data, item))
        if is_data:
            self._queued_data += 1

    def pop_sendable(self) -> tuple[T, int] | None:
        """The next item that may be sent now and the backlog behind it, or None."""
        if not self._queue:
            return None
        is_data, item = self._queue[0]
        if is_data:
            if self._credit <= 0:
                return None
            self._credit -= 1
            self._data_sent += 1
            self._queued_data -= 1
        self._queue.popleft()
        return item, self._queued_data

    def discard(self) -> int:
        """Drop everything queued (the channel is being torn down); returns how many."""
        dropped = len(self._queue)
        self._queue.clear()
        self._queued_data = 0
        return dropped

    def statistics(self) -> LedgerStats:
        """A frozen snapshot of the counters."""
        return LedgerStats(
            credit=self._credit,
            backlog=self._queued_data,
            queued=len(self._queue),
            granted=self._granted,
            data_sent=self._data_sent,
        )


class _ChannelSlots:
    __slots__ = ("announced", "backlog", "ended", "floating_held", "queued")

    def __init__(self, exclusive: int) -> None:
        self.announced = exclusive  # credits the sender holds and has not used
        self.queued = 0  # buffers received and not yet consumed
        self.floating_held = 0  # floating slots this channel holds (announced or queued)
        self.backlog = 0  # the sender's last reported backlog
        self.ended = False  # END_OF_PARTITION seen: no more data will come


class InputCredits:
    """Receiver side of one input gate: exclusive slots per channel plus a floating pool.

    Every method returns the credits to announce as ``[(channel, n), ...]``.
    """

    def __init__(self, channels: Iterable[int], *, exclusive: int, floating: int) -> None:
        if exclusive < 1:
            raise ValueError(f"exclusive credits per channel must be >= 1, got {exclusive}")
        if floating < 0:
            raise ValueError(f"floating credits must be >= 0, got {floating}")
        self.exclusive = exclusive
        self.floating = floating
        # Floating slots nobody holds.
        self._pool = floating
        self._channels = {ch: _ChannelSlots(exclusive) for ch in channels}
        # Channels that asked for floating slots the pool could not give, oldest first.
        self._waiting: deque[int] = deque()

    def _slots(self, channel: int) -> _ChannelSlots:
        try:
            return self._channels[channel]
        except KeyError:
            raise ChannelError(f"channel {channel} is not an input of this gate") from None

    def _wants_more(self, slots: _ChannelSlots) -> bool:
        return not slots.ended and slots.announced < slots.backlog + self.exclusive

    def _take_floating(self, channel: int, slots: _ChannelSlots) -> int:
        granted = 0
        while self._pool > 0 and self._wants_more(slots):
            self._pool -= 1
            slots.floating_held += 1
            slots.announced += 1
            granted += 1
        if self._wants_more(slots) and channel not in self._waiting:
            self._waiting.append(channel)
        return granted

    def _release_floating(self, slots: _ChannelSlots) -> list[tuple[int, int]]:
        slots.floating_held -= 1
        self._pool += 1
        grants: list[tuple[int, int]] = []
        while self._pool > 0 and self._waiting:
            channel = self._waiting.popleft()
            waiting = self._channels[channel]
            granted = self._take_floating(channel, waiting)
            if granted:
                grants.append((channel, granted))
        return grants

    def on_buffer(self, channel: int, backlog: int) -> list[tuple[int, int]]:
        """A DATA buffer arrived on ``channel`` with the sender's ``backlog``."""
        slots = self._slots(channel)
        if slots.ended:
            raise ChannelError(f"channel {channel}: data after END_OF_PARTITION")
        if slots.announced <= 0:
            raise ChannelError(f"channel {channel}: sender overdraft (data without credit)")
        if backlog < 0:
            raise ChannelError(f"channel {channel}: negative backlog {backlog}")
        slots.announced -= 1
        slots.queued += 1
        slots.backlog = backlog
        granted = self._take_floating(channel, slots)
        return [(channel, granted)] if granted else []

    def on_consumed(self, channel: int) -> list[tuple[int, int]]:
        """The consumer finished with one buffer of ``channel``: its slot is free."""
        slots = self._slots(channel)
        if slots.queued <= 0:
            raise ChannelError(f"channel {channel}: consumed a buffer that was never queued")
        slots.queued -= 1
        if slots.floating_held > 0 and (
            slots.ended or slots.announced >= slots.backlog + self.exclusive
        ):
            return self._release_floating(slots)
        if slots.ended:
            return []
        slots.announced += 1
        return [(channel, 1)]

    def on_end(self, channel: int) -> list[tuple[int, int]]:
        """END_OF_PARTITION on ``channel``: its unused credits will never be spent."""
        slots = self._slots(channel)
        slots.ended = True
        if channel in self._waiting:
            self._waiting.remove(channel)
        grants: list[tuple[int, int]] = []
        # Free floating slots that were promised to the sender but will never be used.
        unused_floating = min(slots.announced, slots.floating_held)
        slots.announced = 0
        for _ in range(unused_floating):
            grants.extend(self._release_floating(slots))
        return grants

    def pool(self) -> int:
        """Floating slots nobody holds."""
        return self._pool

    def fill(self) -> float:
        """The share of the gate's buffer slots (every channel's exclusive ones and the
        floating pool) holding a buffer not yet consumed, 0.0 to 1.0."""
        capacity = self.exclusive * len(self._channels) + self.floating
        queued = sum(slots.queued for slots in self._channels.values())
        return min(1.0, queued / capacity) if capacity else 0.0

    def channel_state(self, channel: int) -> tuple[int, int, int]:
        """``(announced, queued, floating_held)`` of a channel (for tests and metrics)."""
        s = self._slots(channel)
        return s.announced, s.queued, s.floating_held
