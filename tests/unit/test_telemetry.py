"""Where spans go, and how a trace context travels (no daemons)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.config import COORDINATOR_SETTINGS, NODE_SETTINGS, resolve_settings
from mesh.errors import ConfigError, FrameError
from mesh.protocol.states import CheckpointKind
from mesh.telemetry.endpoint import metric_export_interval_ms, metrics_endpoint, traces_endpoint
from mesh.telemetry.tracing import carrier_of, child_span, end_span, root_context
from mesh.transport.barriers import BarrierPayload

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_setting_wins_then_the_traces_variable_then_the_base_variable() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318/",
    }
    assert traces_endpoint("http://mine:4318", env) == "http://mine:4318/v1/traces"
    assert traces_endpoint(None, env) == "http://traces:4318/custom"
    assert traces_endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318/"}) == (
        "http://base:4318/v1/traces"
    )
    assert traces_endpoint(None, {}) is None


def test_metrics_go_where_the_setting_then_the_metrics_then_the_base_variable_says() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:4318/custom",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318/",
    }
    assert metrics_endpoint("http://mine:4318/", env) == "http://mine:4318/v1/metrics"
    assert metrics_endpoint(None, env) == "http://metrics:4318/custom"
    assert metrics_endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318"}) == (
        "http://base:4318/v1/metrics"
    )
    assert metrics_endpoint(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t"}) is None
    assert metrics_endpoint(None, {}) is None


@pytest.mark.parametrize(
    ("value", "interval_ms"),
    [
        (None, 10_000),
        ("500", 500),
        ("2500.5", 2500.5),
        ("0", 10_000),
        ("-1", 10_000),
        ("soon", 10_000),
        ("inf", 10_000),
        ("nan", 10_000),
    ],
)
def test_the_metric_export_interval_is_ten_seconds_unless_the_variable_says(
    value: str | None, interval_ms: float
) -> None:
    env = {} if value is None else {"OTEL_METRIC_EXPORT_INTERVAL": value}
    assert metric_export_interval_ms(env) == interval_ms


@pytest.mark.parametrize("settings", [COORDINATOR_SETTINGS, NODE_SETTINGS])
def test_every_daemon_takes_an_otlp_endpoint_and_refuses_a_bad_one(settings: tuple) -> None:
    role = "node" if settings is NODE_SETTINGS else "coordinator"
    good = resolve_settings(
        settings, role, flags={"otlp_endpoint": "http://127.0.0.1:4318/"}, env={}
    )
    assert good["otlp_endpoint"] == "http://127.0.0.1:4318"
    assert resolve_settings(settings, role, flags={}, env={})["otlp_endpoint"] is None
    with pytest.raises(ConfigError, match="otlp_endpoint") as bad:
        resolve_settings(settings, role, flags={}, env={"MESH_OTLP_ENDPOINT": "127.0.0.1:4318"})
    assert "MESH_OTLP_ENDPOINT" in str(bad.value) and "http://" in str(bad.value)


def test_a_barrier_carries_its_trace_context_and_refuses_a_malformed_one() -> None:
    traced = BarrierPayload(CheckpointKind.CHECKPOINT, "/ckpt/chk-3", {"traceparent": TRACEPARENT})
    assert BarrierPayload.decode(traced.encode()) == traced
    plain = BarrierPayload(CheckpointKind.SAVEPOINT, "/sp")
    assert b"trace" not in plain.encode()
    assert BarrierPayload.decode(plain.encode()) == plain
    with pytest.raises(FrameError, match="trace"):
        BarrierPayload.decode(b'{"kind": "checkpoint", "dir": "/d", "trace": {"traceparent": 1}}')


def test_without_an_sdk_nothing_is_traced_and_no_context_travels() -> None:
    from opentelemetry import trace

    span = trace.get_tracer("t").start_span("checkpoint", context=root_context())
    assert carrier_of(span) is None
    assert not child_span(trace.get_tracer("t"), "snapshot", None, {}).is_recording()


def test_a_child_started_from_a_carrier_joins_the_parent_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    root = tracer.start_span("checkpoint", context=root_context())
    carrier = carrier_of(root)
    assert carrier is not None and set(carrier) >= {"traceparent"}
    child = child_span(tracer, "snapshot", carrier, {"mesh.subtask.index": 1})
    end_span(child, error="disk full")
    end_span(root, attributes={"mesh.checkpoint.size_bytes": 10, "ignored": None})
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["snapshot"].context.trace_id == finished["checkpoint"].context.trace_id
    assert finished["snapshot"].parent is not None
    assert finished["snapshot"].parent.span_id == finished["checkpoint"].context.span_id
    assert finished["snapshot"].status.description == "disk full"
    assert finished["checkpoint"].attributes == {"mesh.checkpoint.size_bytes": 10}


def test_log_records_inside_a_traced_span_carry_its_ids_in_text_and_json() -> None:
    import io
    import json
    import logging

    from opentelemetry import trace

    from mesh.logs import JsonFormatter, _TextFormatter
    from mesh.telemetry.logs import TraceIdFilter

    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("snapshot")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceIdFilter())
    logger = logging.getLogger("tests.trace_ids")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        handler.setFormatter(JsonFormatter("node"))
        logger.warning("outside")
        with trace.use_span(span, end_on_exit=True):
            logger.warning("inside %d", 7)
        handler.setFormatter(_TextFormatter("%(message)s"))
        with trace.use_span(provider.get_tracer("t").start_span("x"), end_on_exit=True):
            logger.warning("plain")
    finally:
        logger.removeHandler(handler)
    outside, inside, plain = stream.getvalue().splitlines()
    assert "trace_id" not in json.loads(outside)
    entry = json.loads(inside)
    assert entry["message"] == "inside 7" and entry["role"] == "node"
    assert entry["level"] == "warning" and entry["logger"] == "tests.trace_ids"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert plain.startswith("plain trace=") and " span=" in plain
