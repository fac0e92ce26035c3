"""Which addresses a daemon may listen on or advertise without keys.

Without CURVE keys anyone who reaches a daemon's port can register as a node, submit
a job (code that then runs on every node) or push data into a job. So a keyless daemon
binds and advertises loopback addresses only, unless told ``--insecure``. The checks
here are pure; ``route_source`` asks the kernel which local address faces a host (what a
node bound to every interface advertises).
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = [
    "endpoint_host",
    "exposure_error",
    "is_loopback",
    "is_wildcard",
    "route_source",
    "wildcard_advertise",
]

_WILDCARDS = {"*", "0.0.0.0", "::", "[::]", "[::0]", "::0", ""}


def endpoint_host(endpoint: str) -> str:
    """The host of ``tcp://HOST:PORT``."""
    return endpoint.strip().removeprefix("tcp://").rsplit(":", 1)[0]


def is_wildcard(host: str) -> bool:
    """Whether ``host`` means every interface."""
    return host.strip() in _WILDCARDS


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ::1). Any other
    name counts as not loopback: it may resolve anywhere."""
    host = host.strip()
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_error(what: str, host: str, *, keys: bool, insecure: bool) -> str | None:
    """Why a daemon must not ``what`` (like "listen on") ``host``, or None if it may."""
    if keys or insecure or is_loopback(host):
        return None
    shown = "every interface (" + host + ")" if is_wildcard(host) else host
    return (
        f"refusing to {what} {shown} without keys: anyone who reaches it could run code "
        "on this cluster; give --keys DIR (see mesh keys generate), or --insecure on a "
        "network you trust"
    )


def wildcard_advertise(host: str) -> str | None:
    """Why ``host`` cannot be advertised to peers, or None if it can."""
    if is_wildcard(host):
        return (
            f"advertise_host = {host!r} is not an address peers can dial: give the "
            "host name or address other nodes reach this one at"
        )
    return None


def route_source(endpoint: str) -> str:
    """The local address this host uses to reach ``endpoint``'s host (no packet is
    sent: a UDP socket's connect only picks the route). Raises OSError."""
    host, _, port = endpoint.strip().removeprefix("tcp://").rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, int(port)))
        address = str(probe.getsockname()[0])
    return f"[{address}]" if ":" in address else address
