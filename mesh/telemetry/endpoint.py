"""Where a daemon exports its spans and metrics (no OpenTelemetry import: the CLI asks
this before deciding to load the SDK).

The daemon's ``otlp_endpoint`` setting (``--otlp-endpoint``, ``MESH_OTLP_ENDPOINT`` or
the TOML file) is a base URL; without it, the standard variables apply: for traces
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL of the traces resource), for
metrics ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` (likewise), else
``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL) for both. Metrics are exported every
``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds, 10 s unless set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["metric_export_interval_ms", "metrics_endpoint", "traces_endpoint"]

_TRACES_PATH = "/v1/traces"
_METRICS_PATH = "/v1/metrics"
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 10_000


def _endpoint(
    configured: str | None, env: Mapping[str, str] | None, signal_variable: str, path: str
) -> str | None:
    env = os.environ if env is None else env
    if configured:
        return configured.rstrip("/") + path
    if env.get(signal_variable):
        return env[signal_variable]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + path
    return None


def traces_endpoint(configured: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The URL spans are exported to, or None when nothing is configured."""
    return _endpoint(configured, env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _TRACES_PATH)


def metrics_endpoint(configured: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The URL metrics are exported to, or None when nothing is configured."""
    return _endpoint(configured, env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", _METRICS_PATH)


def metric_export_interval_ms(env: Mapping[str, str] | None = None) -> float:
    """How often metrics are exported: ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds)
    when it is a positive number, else 10 s."""
    env = os.environ if env is None else env
    try:
        interval = float(env.get("OTEL_METRIC_EXPORT_INTERVAL", ""))
    except ValueError:
        return DEFAULT_METRIC_EXPORT_INTERVAL_MS
    return interval if 0 < interval < float("inf") else DEFAULT_METRIC_EXPORT_INTERVAL_MS
