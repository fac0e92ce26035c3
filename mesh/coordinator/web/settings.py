"""Where and how the coordinator serves HTTP (light: imported by the config, which must
not pull the web stack in)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import ConfigError

__all__ = ["HttpSettings", "bind_http", "parse_http_address"]


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


def bind_http(settings: HttpSettings) -> tuple[socket.socket, str]:
    """The listening socket of ``settings``' address, and the URL it serves at (bound
    before the web stack is even imported: connections wait in its backlog meanwhile).
    ConfigError if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on connections
    # accepted from such a socket; with it on, each answer on a kept-open connection
    # waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve HTTP on {settings.host}:{settings.port}: {exc}") from None
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return sock, f"{settings.scheme}://{host}:{sock.getsockname()[1]}"
