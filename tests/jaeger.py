"""A real Jaeger (v2, the OpenTelemetry Collector based binary) as a subprocess for tests.

The binary comes from ``.ci/build-jaeger`` (cached under ``~/.cache/mesh-tools``) or from
``$MESH_JAEGER``. :func:`running_jaeger` writes a config whose every listener is on
127.0.0.1 on a port picked free, with in-memory storage, and nothing else enabled: Jaeger's
built-in all-in-one config would open a dozen fixed ports (OTLP gRPC/HTTP, the Jaeger and
Zipkin receivers, remote sampling, health check, expvar, zpages, the collector's own
Prometheus metrics, the query gRPC/HTTP servers on all interfaces), and the query
extension would export Jaeger's own traces to localhost:4317.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.tools import cached_binary

JAEGER_VERSION = "v1.75.0"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

# Loopback only: never send these requests through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def jaeger_binary() -> Path | None:
    """The Jaeger binary: ``$MESH_JAEGER`` if set, else the one ``.ci/build-jaeger``
    caches; ``None`` if that file is absent."""
    return cached_binary("MESH_JAEGER", "jaeger", JAEGER_VERSION)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


CONFIG_TEMPLATE = """\
# Jaeger v2 (OpenTelemetry Collector) config for tests: OTLP/HTTP in, memory storage,
# query API out; every listener on {host}, on a port picked free.
service:
  # Only the two extensions needed: no healthcheckv2 (13133), expvar (27777),
  # zpages (27778), remote_sampling (5778, 5779) or pprof.
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      # OTLP only: no jaeger (14250, 14268, 6831/udp, 6832/udp) or zipkin (9411)
      # receivers. No batch processor: spans are stored without its delay.
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    # The collector's own metrics default to a Prometheus server on localhost:8888;
    # level none gives a no-op meter provider and no server.
    metrics:
      level: none
      readers: []
    # The collector's own traces: none.
    traces:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    # The defaults are :16686 and :16685 (all interfaces); the gRPC server cannot be
    # turned off, so it gets a loopback port too.
    http:
      endpoint: "{host}:{query_http_port}"
    grpc:
      endpoint: "{host}:{query_grpc_port}"
    # On by default in v2: it would export Jaeger's own traces over OTLP/gRPC to
    # localhost:4317, which may be some other collector.
    enable_tracing: false

receivers:
  otlp:
    protocols:
      # Only http is listed, so there is no gRPC server (default 4317).
      http:
        endpoint: "{host}:{otlp_http_port}"

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_config(otlp_http_port: int, query_http_port: int, query_grpc_port: int) -> str:
    """The config file's text for these ports (see ``CONFIG_TEMPLATE``)."""
    return CONFIG_TEMPLATE.format(
        host=HOST,
        otlp_http_port=otlp_http_port,
        query_http_port=query_http_port,
        query_grpc_port=query_grpc_port,
    )


def _child_env() -> dict[str, str]:
    """The environment for Jaeger: ours, less what could make it talk elsewhere (the
    OpenTelemetry SDK variables the Go SDK reads, and ``JAEGER_*``)."""
    return {
        key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "JAEGER_"))
    }


def _http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request with a short timeout: (status, body); HTTP errors are returned, not
    raised; connection errors raise ``OSError``."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def summarize_traces(traces: list[dict[str, Any]]) -> str:
    """Traces in a few lines: trace id, then each span as service/operation id<-parent."""
    if not traces:
        return "no traces"
    lines = []
    for trace in traces:
        processes = trace.get("processes", {})
        spans = []
        for span in trace.get("spans", []):
            service = processes.get(span.get("processID"), {}).get("serviceName", "?")
            parents = [r.get("spanID") for r in span.get("references", [])]
            spans.append(
                f"{service}/{span.get('operationName')} {span.get('spanID')}<-{parents or '-'}"
            )
        lines.append(f"trace {trace.get('traceID')}: " + "; ".join(spans))
    return "\n".join(lines)


@dataclass
class Jaeger:
    """A running Jaeger: where to send OTLP/HTTP and where to query."""

    otlp_endpoint: str  # e.g. http://127.0.0.1:PORT; spans go to {otlp_endpoint}/v1/traces
    query_url: str  # e.g. http://127.0.0.1:PORT; the JSON API is under /api
    log_path: Path
    process: subprocess.Popen[bytes]

    def traces(self, service: str, limit: int = 100) -> list[dict[str, Any]]:
        """The service's traces from ``GET /api/traces`` (each with ``traceID``, ``spans``,
        ``processes``); empty if Jaeger does not know the service yet."""
        query = urllib.parse.urlencode({"service": service, "limit": limit, "lookback": "1h"})
        status, body = _http("GET", f"{self.query_url}/api/traces?{query}")
        if status != 200:
            raise AssertionError(
                f"GET /api/traces?{query} answered {status}: {body[:500]!r}\n{self.log_tail()}"
            )
        data = json.loads(body).get("data") or []
        return list(data)

    def wait_for_traces(
        self,
        service: str,
        predicate: Callable[[list[dict[str, Any]]], object],
        timeout_s: float = 30.0,
        interval_s: float = 0.1,
    ) -> list[dict[str, Any]]:
        """Poll the service's traces until ``predicate(traces)`` holds and return them;
        after ``timeout_s`` fail with the last traces seen, summarised."""
        deadline = time.monotonic() + timeout_s
        while True:
            traces = self.traces(service)
            if predicate(traces):
                return traces
            if self.process.poll() is not None:
                raise AssertionError(
                    f"jaeger exited ({self.process.returncode}) while waiting for traces "
                    f"of {service!r}\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout_s:g} s waiting for traces of {service!r}; "
                    f"last seen:\n{summarize_traces(traces)}"
                )
            time.sleep(interval_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no jaeger log: {err})"
        return "jaeger log (tail):\n" + "\n".join(text.splitlines()[-lines:])

    def _ready(self) -> str | None:
        """``None`` once both the OTLP receiver and the query API answer 200; else what
        is not ready yet."""
        try:
            # An empty body is a valid (empty) ExportTraceServiceRequest.
            status, body = _http(
                "POST",
                f"{self.otlp_endpoint}/v1/traces",
                body=b"",
                headers={"Content-Type": "application/x-protobuf"},
            )
            if status != 200:
                return f"OTLP receiver answered {status}: {body[:200]!r}"
            status, body = _http("GET", f"{self.query_url}/api/services")
            if status != 200:
                return f"query API answered {status}: {body[:200]!r}"
        except OSError as err:
            return f"not answering: {err}"
        return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@contextmanager
def running_jaeger(tmp_path: Path, binary: Path | None = None) -> Iterator[Jaeger]:
    """Start Jaeger (config and log in ``tmp_path``), wait until it is ready, and stop it
    on exit, whatever the body did."""
    binary = binary or jaeger_binary()
    if binary is None:
        raise FileNotFoundError("no Jaeger binary: run .ci/build-jaeger or set MESH_JAEGER")
    otlp_port, query_port, grpc_port = free_port(), free_port(), free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = tmp_path / "jaeger.yaml"
    config_path.write_text(jaeger_config(otlp_port, query_port, grpc_port))
    log_path = tmp_path / "jaeger.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "--config", f"file:{config_path}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            cwd=tmp_path,
        )
    try:
        jaeger = Jaeger(
            otlp_endpoint=f"http://{HOST}:{otlp_port}",
            query_url=f"http://{HOST}:{query_port}",
            log_path=log_path,
            process=process,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while (not_ready := jaeger._ready()) is not None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"jaeger exited ({process.returncode}) during startup: {not_ready}\n"
                    f"{jaeger.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"jaeger not ready after {START_TIMEOUT_S:g} s: {not_ready}\n"
                    f"{jaeger.log_tail()}"
                )
            time.sleep(0.05)
        yield jaeger
    finally:
        _stop(process)
