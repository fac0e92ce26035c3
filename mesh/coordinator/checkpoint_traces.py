"""The trace of each checkpoint in flight: its root span on the coordinator, and the
context that rides to the nodes (in the trigger, the barriers and the completion)."""

from __future__ import annotations

from typing import Any

from mesh.protocol.states import CheckpointKind, CheckpointOutcome
from mesh.telemetry.tracing import Span, carrier_of, end_span, root_context, trace_id_of, tracer

__all__ = ["CheckpointTraces"]


class CheckpointTraces:
    """Root spans of checkpoints, by checkpoint id (no-ops when nothing is traced)."""

    def __init__(self, job_id: str, job_name: str, attempt: int) -> None:
        self._labels: dict[str, Any] = {
            "mesh.job.id": job_id,
            "mesh.job.name": job_name,
            "mesh.job.attempt": attempt,
        }
        self._spans: dict[int, Span] = {}
        self._tracer = tracer("mesh.coordinator.checkpoints")

    def begin(
        self, checkpoint_id: int, kind: CheckpointKind, directory: str, subtasks: int
    ) -> dict[str, str] | None:
        """Start checkpoint ``checkpoint_id``'s trace; returns the context to send."""
        span = self._tracer.start_span(
            kind.value,
            context=root_context(),
            attributes={
                **self._labels,
                "mesh.checkpoint.id": checkpoint_id,
                "mesh.checkpoint.kind": kind.value,
                "mesh.checkpoint.directory": directory,
                "mesh.checkpoint.subtasks": subtasks,
            },
        )
        self._spans[checkpoint_id] = span
        return carrier_of(span)

    def context(self, checkpoint_id: int) -> dict[str, str] | None:
        """The context of a checkpoint in flight (None if it is not traced)."""
        span = self._spans.get(checkpoint_id)
        return carrier_of(span) if span is not None else None

    def trace_id(self, checkpoint_id: int) -> str | None:
        """The trace id of a checkpoint in flight (None if it is not traced)."""
        span = self._spans.get(checkpoint_id)
        return trace_id_of(span) if span is not None else None

    def completed(self, checkpoint_id: int, size_bytes: int) -> dict[str, str] | None:
        """End the trace's root span of a completed checkpoint; returns its context for
        the sinks' commits."""
        span = self._spans.pop(checkpoint_id, None)
        if span is None:
            return None
        attributes = {
            "mesh.checkpoint.outcome": CheckpointOutcome.COMPLETED.value,
            "mesh.checkpoint.size_bytes": size_bytes,
        }
        end_span(span, attributes=attributes)
        return carrier_of(span)

    def aborted(self, checkpoint_id: int, reason: str, *, failure: bool) -> None:
        """End the root span of a checkpoint given up (an error status if it failed)."""
        span = self._spans.pop(checkpoint_id, None)
        if span is None:
            return
        outcome = CheckpointOutcome.FAILED if failure else CheckpointOutcome.ABORTED
        end_span(
            span,
            error=reason if failure else None,
            attributes={"mesh.checkpoint.outcome": outcome.value, "mesh.checkpoint.reason": reason},
        )
