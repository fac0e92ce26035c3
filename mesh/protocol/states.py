"""States and kinds that cross a process boundary, as enums.

They are ``StrEnum``s, so a value on the wire (and in ``mesh status --json``) is the
member's plain name, and the codec turns it back into the member, refusing an unknown
one with the message and field named. Nothing outside the codec compares a state with a
string.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FINAL_JOB_STATES",
    "SUBTASK_DONE",
    "CheckpointKind",
    "CheckpointOutcome",
    "JobState",
    "TaskState",
]


class TaskState(StrEnum):
    """Lifecycle of a subtask, as its node reports it."""

    DEPLOYED = "DEPLOYED"
    RUNNING = "RUNNING"
    ENDING = "ENDING"  # input ended; a sink waits for the job's end to commit
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    # Set by the coordinator, never by a node: the subtask's node was lost (or
    # restarted) while it ran, so nothing more will be heard of it.
    LOST = "LOST"


#: Subtask states after which a subtask does no more work.
SUBTASK_DONE = frozenset({TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELED, TaskState.LOST})


class JobState(StrEnum):
    """Where a job is in its life (the transitions are in ``coordinator/jobs.py``)."""

    CREATED = "CREATED"
    SCHEDULING = "SCHEDULING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    CANCELLING = "CANCELLING"
    FINISHED = "FINISHED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        """Whether the job never leaves this state."""
        return self in FINAL_JOB_STATES


#: Job states a job never leaves.
FINAL_JOB_STATES = frozenset({JobState.FINISHED, JobState.CANCELED, JobState.FAILED})


class CheckpointKind(StrEnum):
    """Why a snapshot of the job is taken."""

    CHECKPOINT = "checkpoint"  # periodic, for failover; retained by count
    SAVEPOINT = "savepoint"  # asked for by a person; kept until they delete it


class CheckpointOutcome(StrEnum):
    """How a triggered checkpoint ended (the checkpoint history's ``state``)."""

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # counts towards the tolerable failures
    ABORTED = "ABORTED"  # given up for a reason that is no failure (the job ends)
    DISCARDED = "DISCARDED"  # completed, then removed when a newer one was retained
