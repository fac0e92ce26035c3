"""Barrier alignment for one subtask's input gate (a pure state machine, no I/O).

Theory of operation (asynchronous barrier snapshots, Flink's aligned checkpoints):

* Every input channel delivers BARRIER(n) in order with its data. In ``exactly_once``
  mode the first barrier of checkpoint n starts an alignment: each channel that
  delivered barrier n is *blocked* (the subtask stops reading it, so records after the
  barrier cannot reach the state before the snapshot; the channel's credit stops and its
  producer waits). When every channel that has not ended delivered barrier n, the
  subtask snapshots its state, forwards BARRIER(n) and unblocks everything.
* ``at_least_once`` never blocks: the snapshot is taken once the last barrier n has
  arrived, and records that overtook it on faster channels are in the snapshot (they
  will be replayed after a restore: duplicates, never loss).
* A channel that ended (END_OF_PARTITION) counts as having delivered every barrier.
* A barrier of a *newer* checkpoint during an alignment aborts the older one (it was
  given up upstream) and starts aligning the newer. Barriers of checkpoints that are
  already done or aborted are stale and ignored.

Every method returns the actions the driver carries out, in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mesh.errors import ChannelError

__all__ = [
    "AbortCheckpoint",
    "Action",
    "BarrierAligner",
    "BlockChannel",
    "TakeSnapshot",
    "UnblockAll",
]


@dataclass(frozen=True, slots=True)
class BlockChannel:
    """Stop reading ``channel`` until the alignment ends."""

    channel: int


@dataclass(frozen=True, slots=True)
class UnblockAll:
    """Read every channel again."""


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """Barrier ``checkpoint`` arrived everywhere: snapshot, then forward the barrier."""

    checkpoint: int


@dataclass(frozen=True, slots=True)
class AbortCheckpoint:
    """The alignment of ``checkpoint`` was given up (a newer barrier arrived)."""

    checkpoint: int


Action = BlockChannel | UnblockAll | TakeSnapshot | AbortCheckpoint


class BarrierAligner:
    """Tracks barriers per channel for one input gate."""

    def __init__(self, channels: Iterable[int], *, exactly_once: bool) -> None:
        self._channels = frozenset(channels)
        if not self._channels:
            raise ValueError("a barrier aligner needs at least one input channel")
        self.exactly_once = exactly_once
        # The checkpoint being aligned, if any.
        self.current: int | None = None
        # Channels that delivered the barrier of ``current``.
        self._received: set[int] = set()
        # Channels that ended: they count as having delivered every barrier.
        self._ended: set[int] = set()
        # The newest checkpoint snapshotted or aborted here; older barriers are stale.
        self.last_done = -1

    def _check(self, channel: int) -> None:
        if channel not in self._channels:
            raise ChannelError(f"barrier from channel {channel}, which is not an input here")

    def _complete(self) -> list[Action]:
        assert self.current is not None
        if not self._channels <= self._received | self._ended:
            return []
        checkpoint = self.current
        self.last_done = checkpoint
        self.current = None
        self._received = set()
        actions: list[Action] = [TakeSnapshot(checkpoint)]
        if self.exactly_once:
            actions.append(UnblockAll())
        return actions

    def _start(self, checkpoint: int, channel: int) -> list[Action]:
        self.current = checkpoint
        self._received = {channel}
        actions: list[Action] = [BlockChannel(channel)] if self.exactly_once else []
        return actions + self._complete()

    def on_barrier(self, channel: int, checkpoint: int) -> list[Action]:
        """BARRIER(``checkpoint``) arrived on ``channel``."""
        self._check(channel)
        if channel in self._ended:
            raise ChannelError(f"channel {channel}: barrier after END_OF_PARTITION")
        if checkpoint <= self.last_done:
            return []  # stale: already snapshotted or aborted
        if self.current is None:
            return self._start(checkpoint, channel)
        if checkpoint < self.current:
            return []  # an older checkpoint than the one aligning: it was given up
        if checkpoint > self.current:
            aborted = self.current
            self.last_done = aborted
            actions: list[Action] = [AbortCheckpoint(aborted)]
            if self.exactly_once:
                actions.append(UnblockAll())
            return actions + self._start(checkpoint, channel)
        if channel in self._received:
            raise ChannelError(f"channel {channel}: barrier {checkpoint} arrived twice")
        self._received.add(channel)
        actions = [BlockChannel(channel)] if self.exactly_once else []
        return actions + self._complete()

    def on_end_of_partition(self, channel: int) -> list[Action]:
        """``channel`` ended; it now counts as having delivered every barrier."""
        self._check(channel)
        self._ended.add(channel)
        if self.current is None:
            return []
        return self._complete()

    def abort(self) -> list[Action]:
        """Give up the current alignment (the checkpoint was aborted elsewhere)."""
        if self.current is None:
            return []
        aborted = self.current
        self.last_done = aborted
        self.current = None
        self._received = set()
        actions: list[Action] = [AbortCheckpoint(aborted)]
        if self.exactly_once:
            actions.append(UnblockAll())
        return actions
