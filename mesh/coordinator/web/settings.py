"""Where and how the coordinator serves HTTP (light: imported by the config, which must
not pull the web stack in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["HttpSettings", "parse_http_address"]


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free one) → (host, port); ValueError says why not."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT like 127.0.0.1:8081, got {text!r}")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Where and how the dashboard is served."""

    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.tls_cert else "http"
