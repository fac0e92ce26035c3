"""Installing OpenTelemetry in a daemon process: the SDK's tracer provider with an OTLP
exporter over HTTP, when an endpoint is configured; the SDK's meter provider with a
Prometheus endpoint, an OTLP/HTTP metric exporter, or both.

Where spans and metrics go is ``endpoint.traces_endpoint`` and
``endpoint.metrics_endpoint``; without an endpoint (and, for metrics, without a metrics
port) the daemon stays uninstrumented (the API's no-op providers are left in place).
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
from mesh.telemetry.endpoint import metric_export_interval_ms, metrics_endpoint, traces_endpoint

__all__ = ["MetricsServer", "Telemetry", "install_metrics", "install_tracing", "start_metrics"]

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
    """What ``install_metrics`` set up: the meter provider, and the Prometheus endpoint
    it serves and the OTLP endpoint it exports to (each None when off); ``shutdown``
    stops serving, exports what was not yet exported (bounded) and stops."""

    provider: Any
    server: Any = None
    endpoint: str | None = None  # the Prometheus endpoint's URL
    otlp_endpoint: str | None = None

    def shutdown(self) -> None:
        """Stop serving, flush the OTLP exporter (at most its timeout), stop."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


def install_metrics(
    service: str,
    instance_id: str | None,
    host: str,
    port: int,
    configured_endpoint: str | None = None,
) -> MetricsServer | None:
    """Install the global meter provider of this process: its instruments are served
    as Prometheus text at ``http://host:port/metrics`` unless ``port`` is 0, and
    exported by OTLP/HTTP when an endpoint is configured; None when neither is on."""
    installed = start_metrics(service, instance_id, host, port, configured_endpoint)
    if installed is not None:
        from opentelemetry import metrics

        metrics.set_meter_provider(installed.provider)
    return installed


def start_metrics(
    service: str,
    instance_id: str | None,
    host: str,
    port: int,
    configured_endpoint: str | None = None,
) -> MetricsServer | None:
    """A meter provider serving and exporting as ``install_metrics`` says, without
    making it the process's global one."""
    otlp_endpoint = metrics_endpoint(configured_endpoint)
    if port == 0 and otlp_endpoint is None:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader

    attributes = {"service.name": service, "service.version": __version__}
    if instance_id:
        attributes["service.instance.id"] = instance_id
    readers: list[MetricReader] = []
    if port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader())
    if otlp_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp_endpoint, timeout=_EXPORT_TIMEOUT_S),
                export_interval_millis=metric_export_interval_ms(),
                export_timeout_millis=_EXPORT_TIMEOUT_S * 1000,
            )
        )
    provider = MeterProvider(resource=Resource.create(attributes), metric_readers=readers)
    installed = MetricsServer(provider=provider, otlp_endpoint=otlp_endpoint)
    if port:
        from prometheus_client import start_http_server

        try:
            installed.server, _ = start_http_server(port, addr=host)
        except OSError:
            provider.shutdown()
            raise
        installed.endpoint = f"http://{host}:{installed.server.server_port}/metrics"
        log.info("serving metrics at %s", installed.endpoint)
    if otlp_endpoint is not None:
        log.info("exporting metrics to %s as %s", otlp_endpoint, service)
    return installed
