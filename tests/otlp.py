"""A small OTLP/HTTP trace receiver for tests: real HTTP on 127.0.0.1, real protobuf.

Daemons export to ``receiver.endpoint`` exactly as they would to a collector; every
``ExportTraceServiceRequest`` is decoded with ``opentelemetry-proto`` into ``Span``s
(service name from the resource, ids as hex) that tests can assert on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


@dataclass
class OtlpReceiver:
    """What a running receiver got so far."""

    endpoint: str = ""
    spans: list[Span] = field(default_factory=list)
    bad_requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Span]:
        """The spans received so far."""
        with self.lock:
            return list(self.spans)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Serve OTLP/HTTP traces on an ephemeral 127.0.0.1 port until the block ends."""
    received = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                with received.lock:
                    received.bad_requests.append(f"POST {self.path}")
                self.send_response(404)
                self.end_headers()
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with received.lock:
                received.spans.extend(_spans(request))
            reply = ExportTraceServiceResponse().SerializeToString()
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
