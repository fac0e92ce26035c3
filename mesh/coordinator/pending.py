"""Bookkeeping of one checkpoint in flight (pure): who must acknowledge, who did.

Every subtask of the job acknowledges a checkpoint (stateless ones with no files), so
the checkpoint is complete exactly when the set of acks equals the set of subtasks.
An ack is a value to classify, never an exception: a duplicate (the same subtask
twice), an unknown subtask, or an ack for a checkpoint that was already discarded is
reported as such and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mesh.protocol.states import CheckpointKind

__all__ = ["AckResult", "PendingCheckpoint"]


class AckResult(Enum):
    """What an acknowledgement did."""

    SUCCESS = "success"  # counted
    DUPLICATE = "duplicate"  # this subtask had already acknowledged
    UNKNOWN = "unknown"  # not a subtask this checkpoint waits for
    DISCARDED = "discarded"  # the checkpoint was aborted or already completed


@dataclass(eq=False)
class PendingCheckpoint:
    """A checkpoint that was triggered and is waiting for acknowledgements."""

    checkpoint_id: int
    kind: CheckpointKind
    directory: str  # where its files and _metadata.json go
    expected: frozenset[str]  # every subtask ("task.index") that must acknowledge
    started_ms: float  # monotonic
    triggered_wall_ms: int = 0  # epoch ms, for the history
    # Acknowledgement payloads by subtask (files written, bytes, duration).
    acks: dict[str, Any] = field(default_factory=dict)
    # Why it was given up, once it was.
    discarded: str | None = None
    completed: bool = False

    def acknowledge(self, subtask: str, payload: Any) -> AckResult:
        """Record ``subtask``'s acknowledgement."""
        if self.discarded is not None or self.completed:
            return AckResult.DISCARDED
        if subtask not in self.expected:
            return AckResult.UNKNOWN
        if subtask in self.acks:
            return AckResult.DUPLICATE
        self.acks[subtask] = payload
        return AckResult.SUCCESS

    @property
    def fully_acknowledged(self) -> bool:
        """Every expected subtask acknowledged."""
        return self.discarded is None and len(self.acks) == len(self.expected)

    @property
    def missing(self) -> list[str]:
        """Subtasks that have not acknowledged yet, sorted."""
        return sorted(self.expected - self.acks.keys())

    def discard(self, reason: str) -> bool:
        """Give the checkpoint up; False if it already completed or was discarded."""
        if self.discarded is not None or self.completed:
            return False
        self.discarded = reason
        return True

    def complete(self) -> None:
        """Mark it completed (only once fully acknowledged)."""
        if not self.fully_acknowledged:
            raise RuntimeError(
                f"checkpoint {self.checkpoint_id} cannot complete: waiting for {self.missing}"
            )
        self.completed = True
