"""Channel endpoints inside a node: the producer's ``OutputChannel`` and the consumer's
``InputGate``.

A channel is one-way, from one producer subtask to one consumer subtask. Both ends are
driven by plain method calls on the node's single event loop:

* ``OutputChannel`` queues encoded buffers and events in a ``CreditLedger`` and hands
  whatever may go now to its link: a ``LocalLink`` that calls the consumer's gate
  directly (same node) or a remote link that sends frames over the node pair's PUSH
  socket. Credits come back through ``on_credit``.
* ``InputGate`` merges the channels of one consumer subtask: it checks every frame's
  sequence number, reserves credit with ``InputCredits``, queues frames per channel and
  hands them to the subtask one frame at a time, round-robin over the channels that have
  frames (FIFO within a channel). When the
  subtask has processed a buffer it calls ``consumed``, and the freed credit goes back
  to the producer.

A local channel and a remote one behave the same: payloads are encoded either way (a
consumer never shares a record object with its producer), credit and sequence rules are
identical, only the transport differs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import anyio

from mesh.errors import ChannelError
from mesh.transport.credit import CreditLedger, InputCredits
from mesh.transport.frames import FrameKind

__all__ = [
    "INTERRUPTED",
    "ChannelLink",
    "CreditReturn",
    "InputChannel",
    "InputGate",
    "LocalCreditReturn",
    "LocalLink",
    "OutputChannel",
]

_DATA = FrameKind.DATA
_EOP = FrameKind.END_OF_PARTITION


class Interrupted:
    """What ``InputGate.next`` returns after ``interrupt()``."""

    def __repr__(self) -> str:
        return "INTERRUPTED"


INTERRUPTED = Interrupted()


class ChannelLink(Protocol):
    """How an output channel's frames reach the consumer."""

    def transmit(
        self, channel: int, kind: FrameKind, seq: int, arg: int, payload: bytes
    ) -> None: ...


class CreditReturn(Protocol):
    """How a consumer's credits (and end-of-partition acks) reach the producer."""

    def grant(self, channel: int, credits: int) -> None: ...

    def ack_end(self, channel: int) -> None: ...


class OutputChannel:
    """The producer end of one channel."""

    __slots__ = (
        "_again",
        "_backlog_changed",
        "_draining",
        "_ended",
        "_ledger",
        "_link",
        "_seq",
        "end_acked",
        "id",
        "label",
    )

    def __init__(self, channel_id: int, initial_credit: int, link: ChannelLink, label: str) -> None:
        self.id = channel_id
        self.label = label
        self._ledger: CreditLedger[tuple[FrameKind, int, bytes]] = CreditLedger(initial_credit)
        self._link = link
        # Next sequence number; every frame (data or event) takes one.
        self._seq = 0
        # Re-entrancy guard: a local delivery can grant credit back while we drain.
        self._draining = False
        self._again = False
        self._ended = False
        # Set when the backlog shrinks, for a producer waiting on backpressure.
        self._backlog_changed = anyio.Event()
        # Set when the consumer confirmed END_OF_PARTITION.
        self.end_acked = anyio.Event()

    @property
    def backlog(self) -> int:
        """Data buffers waiting for credit."""
        return self._ledger.backlog

    @property
    def credit(self) -> int:
        """Credit available now."""
        return self._ledger.credit

    def send_data(self, payload: bytes) -> None:
        """Queue an encoded buffer; it goes out as soon as there is credit."""
        if self._ended:
            raise ChannelError(f"channel {self.label}: data after END_OF_PARTITION")
        self._ledger.offer((_DATA, 0, payload), is_data=True)
        self._drain()

    def send_event(self, kind: FrameKind, arg: int = 0, payload: bytes = b"") -> None:
        """Queue an event behind the data already queued (events cost no credit)."""
        if kind is _EOP:
            self._ended = True
        self._ledger.offer((kind, arg, payload), is_data=False)
        self._drain()

    def on_credit(self, credits: int) -> None:
        """The consumer announced ``credits`` more buffer slots."""
        self._ledger.add_credit(credits)
        self._drain()

    def on_end_ack(self) -> None:
        """The consumer received END_OF_PARTITION."""
        self.end_acked.set()

    def _drain(self) -> None:
        if self._draining:
            self._again = True
            return
        self._draining = True
        try:
            ledger = self._ledger
            link = self._link
            sent = False
            while True:
                self._again = False
                while (item := ledger.pop_sendable()) is not None:
                    (kind, arg, payload), backlog = item
                    seq = self._seq
                    self._seq = seq + 1
                    link.transmit(self.id, kind, seq, backlog if kind is _DATA else arg, payload)
                    sent = True
                if not self._again:
                    break
        finally:
            self._draining = False
        if sent:
            self._backlog_changed.set()

    async def wait_backlog_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` data buffers wait for credit."""
        while self._ledger.backlog >= limit:
            if self._backlog_changed.is_set():  # a fresh event for this round of waiters
                self._backlog_changed = anyio.Event()
            await self._backlog_changed.wait()

    def discard(self) -> None:
        """Drop what is still queued (the job is being torn down)."""
        self._ledger.discard()
        self._backlog_changed.set()


class LocalLink:
    """Delivers frames of a same-node channel straight into the consumer's gate."""

    __slots__ = ("_target",)

    def __init__(self, target: InputChannel) -> None:
        self._target = target

    def transmit(self, channel: int, kind: FrameKind, seq: int, arg: int, payload: bytes) -> None:
        self._target.deliver(kind, seq, arg, payload)


class LocalCreditReturn:
    """Returns a same-node consumer's credits straight to the producer's channel."""

    __slots__ = ("_source",)

    def __init__(self, source: OutputChannel) -> None:
        self._source = source

    def grant(self, channel: int, credits: int) -> None:
        self._source.on_credit(credits)

    def ack_end(self, channel: int) -> None:
        self._source.on_end_ack()


class InputChannel:
    """The consumer end of one channel (owned by an ``InputGate``)."""

    __slots__ = ("_expected_seq", "credit_return", "gate", "id", "label", "peer", "queue")

    def __init__(
        self,
        gate: InputGate,
        channel_id: int,
        credit_return: CreditReturn,
        *,
        label: str,
        peer: str,
    ) -> None:
        self.gate = gate
        self.id = channel_id
        self.label = label
        self.peer = peer
        self.credit_return = credit_return
        self._expected_seq = 0
        # Frames received and not yet handed to the subtask: (kind, arg, payload).
        self.queue: deque[tuple[FrameKind, int, bytes | memoryview]] = deque()

    def deliver(self, kind: FrameKind, seq: int, arg: int, payload: bytes | memoryview) -> None:
        """A frame arrived (from the network or a local producer)."""
        if seq != self._expected_seq:
            what = "duplicate or reordered" if seq < self._expected_seq else "gap"
            self.gate.fail(
                ChannelError(
                    f"channel {self.label} from {self.peer}: sequence {what} "
                    f"(expected {self._expected_seq}, got {seq})"
                )
            )
            return
        self._expected_seq = seq + 1
        self.gate._on_frame(self, kind, arg, payload)


class InputGate:
    """The merged input of one consumer subtask."""

    def __init__(self, *, exclusive: int, floating: int) -> None:
        self.channels: dict[int, InputChannel] = {}
        self._exclusive = exclusive
        self._floating = floating
        self._credits: InputCredits | None = None
        # Channels with queued frames, in the order they became ready.
        self._ready: deque[InputChannel] = deque()
        self._wakeup: anyio.Event | None = None
        # Channels that delivered END_OF_PARTITION (and it was handed out).
        self._ended: set[int] = set()
        # Channels blocked by a barrier alignment, and the ready ones set aside meanwhile.
        self._blocked: set[int] = set()
        self._parked: list[InputChannel] = []
        self._failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        # Set by ``interrupt``: the next ``next()`` returns INTERRUPTED.
        self._interrupted = False

    def add_channel(
        self, channel_id: int, credit_return: CreditReturn, *, label: str, peer: str
    ) -> InputChannel:
        """Register an input channel (before the first frame arrives)."""
        channel = InputChannel(self, channel_id, credit_return, label=label, peer=peer)
        self.channels[channel_id] = channel
        return channel

    def seal(self) -> None:
        """No more channels will be added; set up credit accounting."""
        self._credits = InputCredits(
            self.channels, exclusive=self._exclusive, floating=self._floating
        )

    def _sealed(self) -> InputCredits:
        if self._credits is None:
            raise ChannelError("input gate used before seal(): its channels are not set up")
        return self._credits

    def fill(self) -> float:
        """The share of this gate's input buffers holding data not yet consumed (0.0
        before ``seal``)."""
        return self._credits.fill() if self._credits is not None else 0.0

    @property
    def finished(self) -> bool:
        """Every channel delivered END_OF_PARTITION."""
        return len(self._ended) == len(self.channels)

    def fail(self, exc: BaseException) -> None:
        """Fail the subtask reading this gate (a broken channel)."""
        if self._failure is None:
            self._failure = exc
            if self.on_failure is not None:
                self.on_failure(exc)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _grant(self, grants: list[tuple[int, int]]) -> None:
        channels = self.channels
        for channel_id, credits in grants:
            channel = channels[channel_id]
            channel.credit_return.grant(channel_id, credits)

    def _on_frame(
        self, channel: InputChannel, kind: FrameKind, arg: int, payload: bytes | memoryview
    ) -> None:
        if self._failure is not None:
            return
        if kind is _DATA:
            try:
                grants = self._sealed().on_buffer(channel.id, arg)
            except ChannelError as exc:
                self.fail(ChannelError(f"channel {channel.label} from {channel.peer}: {exc}"))
                return
            if grants:
                self._grant(grants)
        queue = channel.queue
        queue.append((kind, arg, payload))
        if len(queue) == 1 and channel not in self._parked:
            self._ready.append(channel)
            self._wake()

    def block(self, channel_id: int) -> None:
        """Stop handing out frames of ``channel_id`` (barrier alignment); they stay queued."""
        self._blocked.add(channel_id)

    def unblock_all(self) -> None:
        """Hand out frames of every channel again."""
        self._blocked.clear()
        parked, self._parked = self._parked, []
        for channel in parked:
            if channel.queue:
                self._ready.append(channel)
        if parked:
            self._wake()

    def interrupt(self) -> None:
        """Make the subtask's next (or current) ``next()`` return INTERRUPTED: it has
        other work (timers due, a watermark to send)."""
        self._interrupted = True
        self._wake()

    async def next(
        self,
    ) -> tuple[InputChannel, FrameKind, int, bytes | memoryview] | Interrupted | None:
        """The next frame for the subtask, or None once every channel ended.

        END_OF_PARTITION frames are acknowledged to the producer here, then handed out
        too (they count as barriers for an alignment). Frames of blocked channels wait.
        After ``interrupt()`` it returns ``INTERRUPTED`` once.
        """
        while True:
            if self._failure is not None:
                raise self._failure
            if self._interrupted:
                self._interrupted = False
                return INTERRUPTED
            ready = self._ready
            while ready:
                channel = ready.popleft()
                if channel.id in self._blocked:
                    self._parked.append(channel)
                    continue
                queue = channel.queue
                kind, arg, payload = queue.popleft()
                if queue:
                    ready.append(channel)
                if kind is _EOP:
                    self._ended.add(channel.id)
                    grants = self._sealed().on_end(channel.id)
                    if grants:
                        self._grant(grants)
                    channel.credit_return.ack_end(channel.id)
                return channel, kind, arg, payload
            if self.finished:
                return None
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
            self._wakeup = None

    def consumed(self, channel: InputChannel) -> None:
        """The subtask is done with one DATA buffer of ``channel``: return its credit."""
        try:
            grants = self._sealed().on_consumed(channel.id)
        except ChannelError as exc:
            self.fail(ChannelError(f"channel {channel.label} from {channel.peer}: {exc}"))
            return
        if grants:
            self._grant(grants)
