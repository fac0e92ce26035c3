"""The Jaeger harness end to end: spans sent with the OpenTelemetry SDK over OTLP/HTTP
come back from Jaeger's query API as one trace, parent and child linked."""

from __future__ import annotations

from typing import Any

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.jaeger import Jaeger

SERVICE = "mesh-test"


def test_parent_and_child_spans_reach_jaeger(jaeger: Jaeger) -> None:
    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 only: no proxy from the environment
    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_endpoint}/v1/traces", session=session)
    # A provider of the test's own: the global one is left alone.
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    try:
        tracer = provider.get_tracer("tests.telemetry")
        # Entered left to right: "child" starts while "parent" is the current span.
        with (
            tracer.start_as_current_span("parent") as parent,
            tracer.start_as_current_span("child") as child,
        ):
            pass
        assert provider.force_flush(timeout_millis=10_000), "spans not exported in time"
    finally:
        provider.shutdown()
        session.close()

    trace_id = parent.get_span_context().trace_id
    parent_id = parent.get_span_context().span_id
    child_id = child.get_span_context().span_id

    # Jaeger's JSON ids are hex (leading zeros may be dropped): compare as integers.
    def ours(traces: list[dict[str, Any]]) -> dict[str, Any] | None:
        for trace in traces:
            if int(trace["traceID"], 16) == trace_id and len(trace["spans"]) >= 2:
                return trace
        return None

    trace = ours(jaeger.wait_for_traces(SERVICE, ours, timeout_s=30))
    assert trace is not None
    spans = {span["operationName"]: span for span in trace["spans"]}
    assert sorted(spans) == ["child", "parent"]
    assert int(spans["parent"]["spanID"], 16) == parent_id
    assert int(spans["child"]["spanID"], 16) == child_id
    for span in spans.values():
        assert int(span["traceID"], 16) == trace_id
        assert trace["processes"][span["processID"]]["serviceName"] == SERVICE
    assert spans["parent"]["references"] == []
    [ref] = spans["child"]["references"]
    assert ref["refType"] == "CHILD_OF"
    assert int(ref["traceID"], 16) == trace_id
    assert int(ref["spanID"], 16) == parent_id
