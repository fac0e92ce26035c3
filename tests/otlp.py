"""A small OTLP/HTTP receiver of traces and metrics for tests: real HTTP on 127.0.0.1,
real protobuf.

Daemons export to ``receiver.endpoint`` exactly as they would to a collector; every
``ExportTraceServiceRequest`` is decoded with ``opentelemetry-proto`` into ``Span``s
(service name from the resource, ids as hex), every ``ExportMetricsServiceRequest``
into ``Point``s (one per data point of a sum or gauge), that tests can assert on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Span:
    """One received span."""

    service: str
    instance: str | None
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    error: str | None  # the status message of a span that ended in error
    start_ns: int = 0
    # (trace id, span id, attributes) of each span this one links to
    links: tuple[tuple[str, str, dict[str, Any]], ...] = ()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in v.array_value.values]
    return getattr(v, kind) if kind else None


def _spans(request: ExportTraceServiceRequest) -> list[Span]:
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                found.append(
                    Span(
                        service=str(resource.get("service.name")),
                        instance=resource.get("service.instance.id"),
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex() or None,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        error=s.status.message if s.status.code == 2 else None,
                        start_ns=s.start_time_unix_nano,
                        links=tuple(
                            (
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                {a.key: _value(a.value) for a in link.attributes},
                            )
                            for link in s.links
                        ),
                    )
                )
    return found


@dataclass(frozen=True)
class Point:
    """One received data point of a sum (``monotonic`` when a counter) or a gauge."""

    service: str
    instance: str | None
    name: str
    unit: str
    kind: str  # "sum" or "gauge"
    monotonic: bool
    attributes: dict[str, Any]
    value: float
    time_ns: int


def _points(request: ExportMetricsServiceRequest) -> list[Point]:
    found = []
    for resource_metrics in request.resource_metrics:
        resource = {a.key: _value(a.value) for a in resource_metrics.resource.attributes}
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind not in ("sum", "gauge"):
                    continue
                data = getattr(metric, kind)
                for p in data.data_points:
                    found.append(
                        Point(
                            service=str(resource.get("service.name")),
                            instance=resource.get("service.instance.id"),
                            name=metric.name,
                            unit=metric.unit,
                            kind=kind,
                            monotonic=kind == "sum" and data.is_monotonic,
                            attributes={a.key: _value(a.value) for a in p.attributes},
                            value=getattr(p, p.WhichOneof("value")),
                            time_ns=p.time_unix_nano,
                        )
                    )
    return found


@dataclass
class OtlpReceiver:
    """What a running receiver got so far."""

    endpoint: str = ""
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    bad_requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Span]:
        """The spans received so far."""
        with self.lock:
            return list(self.spans)

    def metric_points(self) -> list[Point]:
        """The metric data points received so far."""
        with self.lock:
            return list(self.points)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Serve OTLP/HTTP traces and metrics on an ephemeral 127.0.0.1 port until the block ends."""
    received = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/traces":
                traces = ExportTraceServiceRequest()
                traces.ParseFromString(body)
                with received.lock:
                    received.spans.extend(_spans(traces))
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                metrics = ExportMetricsServiceRequest()
                metrics.ParseFromString(body)
                with received.lock:
                    received.points.extend(_points(metrics))
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                with received.lock:
                    received.bad_requests.append(f"POST {self.path}")
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
