"""The systemd notification protocol (sd_notify), both ends.

A daemon calls ``notify(READY=1, ...)`` once it is bound and registered; under systemd
(``Type=notify``) that tells the service manager it is up. ``mesh run`` uses the same
protocol to learn when the daemons it started are ready and which ports they bound:
it listens on a datagram socket of its own and passes its path as ``NOTIFY_SOCKET``.
Extra ``MESH_*`` fields carry the endpoints; systemd ignores fields it does not know.

Sending never blocks: a full or missing socket makes ``notify`` return False, so a
listener that stopped reading cannot stall a daemon's event loop.

The watchdog: with ``WatchdogSec=`` systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``)
and expects ``WATCHDOG=1`` more often than that; :func:`watchdog_period_s` decides
whether this process should ping and how often (half the interval).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["EXTEND_TIMEOUT_USEC", "NotifyListener", "notify", "watchdog_period_s"]

# While a daemon waits to be ready it asks for this much more start-up time, again well
# within it (see docs/decisions.md): systemd's start timeout never fires while it waits.
EXTEND_TIMEOUT_USEC = 30_000_000


def notify(**fields: str | int) -> bool:
    """Send ``KEY=value`` lines to ``$NOTIFY_SOCKET``; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(address)
            sock.sendall(payload)
        except OSError:
            return False
    return True


def watchdog_period_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to send ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``), or None when the
    watchdog is off for process ``pid``: the variable is unset or not a positive integer,
    or ``WATCHDOG_PID`` names another process (the variables were inherited)."""
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw.isdigit() or int(raw) <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(pid):
        return None
    return int(raw) / 2 / 1_000_000


class NotifyListener:
    """A datagram socket that collects sd_notify messages from child processes."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="mesh-notify-")
        self.path = str(Path(self._dir) / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)

    def fileno(self) -> int:
        """For ``select``."""
        return self._sock.fileno()

    def receive(self, timeout_s: float) -> dict[str, str] | None:
        """The next message's fields, or None if none came within ``timeout_s``."""
        self._sock.settimeout(timeout_s)
        try:
            data = self._sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        fields = {}
        for line in data.decode(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value
        return fields

    def close(self) -> None:
        """Remove the socket."""
        self._sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass
