"""Installing OpenTelemetry in a daemon process: the SDK's tracer provider with an OTLP
exporter over HTTP, when an endpoint is configured.

Where spans go is ``endpoint.traces_endpoint``; without an endpoint the daemon stays
uninstrumented (the API's no-op provider is left in place).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from mesh._version import __version__
from mesh.telemetry.endpoint import traces_endpoint

__all__ = ["MetricsServer", "Telemetry", "install_metrics", "install_tracing"]

log = logging.getLogger("mesh.telemetry")

# Spans are exported in batches at least this often (the SDK's default is 5 s).
_EXPORT_DELAY_MS = 500
# One export, retries included, gives up after this: a collector that is down must not
# hold up a daemon that stops (its spans are lost, the job is not).
_EXPORT_TIMEOUT_S = 2.0


@dataclass
class Telemetry:
    """What ``install_tracing`` set up; ``shutdown`` flushes and stops the exporter."""

    provider: TracerProvider | None = None
    endpoint: str | None = None

    def shutdown(self) -> None:
        """Export what is buffered (bounded), then stop."""
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def install_tracing(
    service: str, instance_id: str | None, configured_endpoint: str | None
) -> Telemetry:
    """Install the global tracer provider of this process, exporting to the configured
    endpoint; a no-op (and an empty ``Telemetry``) when there is none."""
    endpoint = traces_endpoint(configured_endpoint)
    if endpoint is None:
        return Telemetry()
    attributes = {"service.name": service, "service.version": __version__}
    if instance_id:
        attributes["service.instance.id"] = instance_id
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, timeout=_EXPORT_TIMEOUT_S),
            schedule_delay_millis=_EXPORT_DELAY_MS,
        )
    )
    trace.set_tracer_provider(provider)
    log.info("exporting traces to %s as %s", endpoint, service)
    return Telemetry(provider=provider, endpoint=endpoint)


@dataclass
class MetricsServer:
    """The Prometheus endpoint ``install_metrics`` started; ``shutdown`` stops it."""

    provider: Any
    server: Any
    endpoint: str

    def shutdown(self) -> None:
        """Stop serving and stop the meter provider."""
        self.server.shutdown()
        self.server.server_close()
        self.provider.shutdown()


def install_metrics(
    service: str, instance_id: str | None, host: str, port: int
) -> MetricsServer | None:
    """Install the global meter provider of this process and serve its instruments as
    Prometheus text at ``http://host:port/metrics``; None when ``port`` is 0 (off)."""
    if port == 0:
        return None
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    attributes = {"service.name": service, "service.version": __version__}
    if instance_id:
        attributes["service.instance.id"] = instance_id
    provider = MeterProvider(
        resource=Resource.create(attributes), metric_readers=[PrometheusMetricReader()]
    )
    metrics.set_meter_provider(provider)
    server, _ = start_http_server(port, addr=host)
    endpoint = f"http://{host}:{server.server_port}/metrics"
    log.info("serving metrics at %s", endpoint)
    return MetricsServer(provider=provider, server=server, endpoint=endpoint)
