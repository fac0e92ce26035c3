"""A trace for each of a job's flows: its start (submit → schedule → deploy → running)
and each failover (detected → cancel → restore → deploy → running), with the cause on
the root span and an error status when the flow ends the job.

A flow is a root span with one child span per step; starting a step ends the one before.
With no tracing configured, every span is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.coordinator.jobs import JobRecord
from mesh.telemetry.tracing import Span, context_of, end_span, root_context, trace_id_of, tracer

__all__ = ["JobFlows"]


@dataclass
class _Flow:
    root: Span
    step: Span | None = None


class JobFlows:
    """The open flow of each job, by job id."""

    def __init__(self) -> None:
        self._flows: dict[str, _Flow] = {}
        self._tracer = tracer("mesh.coordinator.lifecycle")

    def begin(self, job: JobRecord, name: str, attributes: dict[str, Any] | None = None) -> None:
        """Start flow ``name`` of ``job`` (a flow still open ends, superseded)."""
        self.end(job, error=f"superseded by {name}")
        root = self._tracer.start_span(
            name,
            context=root_context(),
            attributes={
                "mesh.job.id": job.job_id,
                "mesh.job.name": job.name,
                "mesh.job.attempt": job.attempt,
                **(attributes or {}),
            },
        )
        self._flows[job.job_id] = _Flow(root)

    def trace_id(self, job: JobRecord) -> str | None:
        """The trace id of ``job``'s open flow (None: none open, or not traced)."""
        flow = self._flows.get(job.job_id)
        return trace_id_of(flow.root) if flow is not None else None

    def step(self, job: JobRecord, name: str, attributes: dict[str, Any] | None = None) -> None:
        """The flow of ``job`` moves on to step ``name``."""
        flow = self._flows.get(job.job_id)
        if flow is None:
            return
        if flow.step is not None:
            end_span(flow.step)
        flow.step = self._tracer.start_span(
            name,
            context=context_of(flow.root),
            attributes={"mesh.job.id": job.job_id, **(attributes or {})},
        )

    def note(self, job: JobRecord, attributes: dict[str, Any]) -> None:
        """Add facts to the current step (or the root, between steps)."""
        flow = self._flows.get(job.job_id)
        if flow is not None:
            span = flow.step or flow.root
            for key, value in attributes.items():
                span.set_attribute(key, value)

    def end(
        self, job: JobRecord, *, error: str | None = None, attributes: dict[str, Any] | None = None
    ) -> None:
        """The flow of ``job`` is over: it reached RUNNING, or ``error`` stopped it."""
        flow = self._flows.pop(job.job_id, None)
        if flow is None:
            return
        if flow.step is not None:
            end_span(flow.step, error=error)
        end_span(
            flow.root,
            error=error,
            attributes={"mesh.job.attempt": job.attempt, **(attributes or {})},
        )
