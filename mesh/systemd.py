"""The systemd notification protocol (sd_notify), both ends.

A daemon calls ``notify(READY=1, ...)`` once it is bound and registered; under systemd
(``Type=notify``) that tells the service manager it is up. ``mesh run`` uses the same
protocol to learn when the daemons it started are ready and which ports they bound:
it listens on a datagram socket of its own and passes its path as ``NOTIFY_SOCKET``.
Extra ``MESH_*`` fields carry the endpoints; systemd ignores fields it does not know.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

__all__ = ["NotifyListener", "notify"]


def notify(**fields: str | int) -> bool:
    """Send ``KEY=value`` lines to ``$NOTIFY_SOCKET``; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(payload)
        except OSError:
            return False
    return True


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
