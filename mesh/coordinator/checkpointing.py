"""One job attempt's checkpoint manager, wired to the coordinator (``checkpoints`` holds
the manager itself, which knows nothing of jobs' lifecycles)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mesh.coordinator.checkpoints import CheckpointManager, JobView
from mesh.coordinator.config import CoordinatorConfig
from mesh.coordinator.jobs import JobRecord
from mesh.coordinator.journal import JobJournal
from mesh.coordinator.outbound import ControlOut
from mesh.coordinator.store import CheckpointStore
from mesh.coordinator.trigger import CheckpointPolicy
from mesh.time.clock import Clock

__all__ = ["checkpoint_manager"]


def checkpoint_manager(
    job: JobRecord,
    *,
    config: CoordinatorConfig,
    store: CheckpointStore,
    clock: Clock,
    out: ControlOut,
    journal: JobJournal,
    fail: Callable[[JobRecord, str], None],
) -> CheckpointManager:
    """The checkpoint manager of ``job``'s current attempt: it sends triggers through
    ``out``, records ids in ``journal`` (never reused), and calls ``fail`` when more
    checkpoints failed in a row than the cluster tolerates."""
    eg = job.graph
    logical = eg.logical
    view = JobView(
        job_id=job.job_id,
        job_name=job.name,
        subtasks=[str(s) for s in eg.subtasks()],
        placement={a.subtask: a.node_id for a in job.assignments},
        nodes=sorted(job.nodes),
        operator_parallelism={
            op.uid: (op.parallelism, op.max_parallelism) for op in logical.operators
        },
        states={k: m.state for k, m in job.metrics.items()},
    )
    manager = CheckpointManager(
        job=view,
        attempt=job.attempt,
        policy=CheckpointPolicy(
            interval_ms=logical.config.checkpoint_interval_ms,
            timeout_ms=config.checkpoint_timeout_ms,
            min_pause_ms=config.checkpoint_min_pause_ms,
            tolerable_failures=config.tolerable_checkpoint_failures,
            retained=config.retained_checkpoints,
        ),
        root=Path(job.checkpoint_root),
        store=store,
        clock=clock,
        send=out.to_node,
        first_id=job.next_checkpoint_id,
    )
    manager.on_too_many_failures = lambda reason: fail(job, reason)

    def next_id(n: int) -> None:
        job.next_checkpoint_id = n
        journal.update(job, next_checkpoint_id=n)

    manager.on_next_id = next_id
    return manager
