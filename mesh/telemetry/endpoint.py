"""Where a daemon exports its spans (no OpenTelemetry import: the CLI asks this before
deciding to load the SDK).

The daemon's ``otlp_endpoint`` setting (``--otlp-endpoint``, ``MESH_OTLP_ENDPOINT`` or
the TOML file) is a base URL; without it, the standard variables
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL of the traces resource) or
``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL) apply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["traces_endpoint"]

_TRACES_PATH = "/v1/traces"


def traces_endpoint(configured: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The URL spans are exported to, or None when nothing is configured."""
    env = os.environ if env is None else env
    if configured:
        return configured.rstrip("/") + _TRACES_PATH
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + _TRACES_PATH
    return None
