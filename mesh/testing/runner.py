"""A ``SubtaskRunner`` wired by hand, from flat keywords (tests and tools that drive one
subtask without a job: a reader or a gate, writers, a manual clock).

A job's runners are built by ``JobRuntime`` from ``JobWiring``; this is the same runner
with the grouped settings (``SubtaskPosition``, ``TaskInput``, ``TaskOutput``,
``EventTimeSettings``) filled from keywords and their defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.connectors.base import SourceReader
from mesh.graph.logical import OperatorSpec
from mesh.node.dataplane.channels import InputGate
from mesh.node.operators.base import RestoredState, RuntimeOperator
from mesh.node.runtime.chain import SideOutputs
from mesh.node.runtime.eventtime import EventTimeSettings
from mesh.node.runtime.output import EdgeWriter
from mesh.node.runtime.task import (
    CheckpointTarget,
    SubtaskPosition,
    SubtaskRunner,
    TaskInput,
    TaskOutput,
)
from mesh.time.clock import Clock

__all__ = ["standalone_runner"]


def standalone_runner(
    *,
    name: str,
    operators: list[RuntimeOperator],
    writers: list[EdgeWriter],
    clock: Clock,
    buffer_timeout_ms: int,
    read_batch: int,
    subtask_index: int,
    parallelism: int,
    max_parallelism: int,
    checkpoints: CheckpointTarget,
    exactly_once: bool = True,
    max_backlog: int = 2,
    reader: SourceReader | None = None,
    source_spec: OperatorSpec | None = None,
    gate: InputGate | None = None,
    restored: dict[str, RestoredState] | None = None,
    side_outputs: SideOutputs | None = None,
    timestamp: Callable[[Any], Any] | None = None,
    max_delay_ms: int = 0,
    idle_timeout_ms: int | None = None,
    watermark_interval_ms: int = 200,
) -> SubtaskRunner:
    """A runner for one subtask, every setting given as a keyword."""
    return SubtaskRunner(
        name=name,
        clock=clock,
        position=SubtaskPosition(subtask_index, parallelism, max_parallelism),
        operators=operators,
        reads=TaskInput(
            reader=reader,
            source_spec=source_spec,
            read_batch=read_batch,
            gate=gate,
            exactly_once=exactly_once,
        ),
        writes=TaskOutput(
            writers=writers,
            buffer_timeout_ms=buffer_timeout_ms,
            side_outputs=side_outputs or {},
            max_backlog=max_backlog,
        ),
        checkpoints=checkpoints,
        restored=restored,
        event_time=EventTimeSettings(
            timestamp=timestamp,
            max_delay_ms=max_delay_ms,
            idle_timeout_ms=idle_timeout_ms,
            watermark_interval_ms=watermark_interval_ms,
        ),
    )
