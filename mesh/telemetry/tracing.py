"""Tracers and trace context for instrumented code (the OpenTelemetry API only).

A trace context travels as a small ``dict[str, str]`` (the W3C ``traceparent`` and
``tracestate`` fields): in a ``TriggerCheckpoint`` from the coordinator, then in the
barrier every subtask forwards, so every span of one checkpoint joins one trace. When
no SDK is configured, spans do not record and ``carrier_of`` gives None, so nothing
extra goes on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "Span",
    "carrier_of",
    "child_span",
    "context_of",
    "current_span",
    "end_span",
    "linked_span",
    "parent_from",
    "root_context",
    "trace_id_of",
    "traced_step",
    "tracer",
    "tracing_enabled",
    "within_trace",
]

_PROPAGATOR = TraceContextTextMapPropagator()


def tracer(name: str) -> Tracer:
    """The tracer of an instrumented module (from the provider the daemon installed)."""
    return trace.get_tracer(name)


def tracing_enabled() -> bool:
    """Whether the daemon installed a tracer provider (spans record and are exported)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def root_context() -> otel_context.Context:
    """A context with no parent: a span started in it begins a trace of its own."""
    return otel_context.Context()


def context_of(span: Span) -> otel_context.Context:
    """A context whose current span is ``span``, to start its children in."""
    return trace.set_span_in_context(span)


def carrier_of(span: Span) -> dict[str, str] | None:
    """``span``'s context as message fields, or None when it does not record."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier or None


def trace_id_of(span: Span) -> str | None:
    """``span``'s trace id as 32 hex digits (what Jaeger's ``/trace/ID`` takes), or None
    when it does not record."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def parent_from(carrier: dict[str, str] | None) -> otel_context.Context | None:
    """The context a carrier holds, to start child spans in (None without one)."""
    if not carrier:
        return None
    return _PROPAGATOR.extract(carrier)


def child_span(
    tracer: Tracer, name: str, carrier: dict[str, str] | None, attributes: Mapping[str, Any]
) -> Span:
    """A span in the trace ``carrier`` names; a non-recording one without a carrier (so
    work that nobody traces starts no trace of its own)."""
    parent = parent_from(carrier)
    if parent is None:
        return trace.INVALID_SPAN
    return tracer.start_span(name, context=parent, attributes=dict(attributes))


def linked_span(
    tracer: Tracer,
    name: str,
    carriers: Sequence[dict[str, str]],
    attributes: Mapping[str, Any],
    link_attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A span that continues the trace of the first of ``carriers`` and links to each of
    them (work that received what those spans sent), or the root of a new trace when
    there are none."""
    if not carriers:
        return tracer.start_span(name, context=root_context(), attributes=dict(attributes))
    contexts = [trace.get_current_span(_PROPAGATOR.extract(c)).get_span_context() for c in carriers]
    links = [Link(c, dict(link_attributes or {})) for c in contexts if c.is_valid]
    return tracer.start_span(
        name,
        context=_PROPAGATOR.extract(carriers[0]),
        links=links,
        attributes=dict(attributes),
    )


@contextmanager
def within_trace(carrier: dict[str, str] | None) -> Iterator[None]:
    """Run the block with the trace ``carrier`` names as the current context (no-op
    without one), so spans the block starts join that trace."""
    parent = parent_from(carrier)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def captured_context() -> otel_context.Context:
    """The current trace context, to carry work it starts into another task."""
    return otel_context.get_current()


@contextmanager
def within_context(context: otel_context.Context | None) -> Iterator[None]:
    """Run the block in ``context`` (from ``captured_context``; no-op for None)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def current_span(span: Span) -> Iterator[None]:
    """Make ``span`` the current span for the block (it is not ended)."""
    with trace.use_span(span, end_on_exit=False, record_exception=False):
        yield


@contextmanager
def traced_step(tracer: Tracer, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    """A child span of the current span for the block, recording an exception that
    escapes it; nothing when no traced span is current (untraced work starts no trace)."""
    if not trace.get_current_span().get_span_context().is_valid:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, attributes=dict(attributes)) as span:
        yield span


def end_span(
    span: Span,
    *,
    error: str | BaseException | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Set ``attributes``, mark the span failed if ``error`` is given, and end it."""
    for key, value in (attributes or {}).items():
        if value is not None:
            span.set_attribute(key, value)
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    elif error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()
