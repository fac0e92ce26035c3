"""The ZAP handler: which CURVE clients a daemon's bound sockets accept.

ZeroMQ asks, for every CURVE handshake on a server socket, the ZAP handler bound at
``inproc://zeromq.zap.01`` in the socket's context (ZAP, ZeroMQ RFC 27): the request
carries the client's address and public key; a 200 reply lets it in, a 400 reply refuses
it (the client sees ``EVENT_HANDSHAKE_FAILED_AUTH``, and no message of it is ever
delivered). Server sockets also set ``ZAP_ENFORCE_DOMAIN``: without a handler, nobody is
let in.

``answer`` decides (pure); ``AllowList`` holds the allowed public keys, read from a
directory of ``*.key`` files and re-read on ``reload`` (a daemon calls it on SIGHUP);
``ZapServer`` answers the requests from the event loop's reader callback, so it needs no
task of its own and is serving before any server socket is bound. Refusals are logged
with the client's address and key, at most once a minute per address and key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from mesh.errors import ConfigError
from mesh.time.clock import Clock, SystemClock

__all__ = ["ZAP_ENDPOINT", "AllowList", "RefusalLog", "ZapAnswer", "ZapServer", "answer"]

log = logging.getLogger("mesh.transport.zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_VERSION = b"1.0"
# How long a refusal of the same address and key stays out of the log.
_QUIET_MS = 60_000


@dataclass(frozen=True, slots=True)
class ZapAnswer:
    """A reply to send, and who was refused (``refused`` is None when let in)."""

    reply: list[bytes]
    address: str
    key: str  # Z85, or "" if the request carried none
    refused: str | None = None


def answer(request: Sequence[bytes], allowed: frozenset[bytes]) -> ZapAnswer:
    """The reply to a ZAP request: 200 for a CURVE client whose public key (Z85) is in
    ``allowed``, 400 for anything else (pure)."""
    if len(request) < 6:
        rid = request[1] if len(request) > 1 else b""
        return ZapAnswer(
            [_VERSION, rid, b"400", b"malformed request", b"", b""], "?", "", "malformed"
        )
    version, rid, _domain, address, _identity, mechanism = request[:6]
    credentials = request[6:]
    where = address.decode("utf-8", "replace") or "unknown address"
    if version != _VERSION:
        return ZapAnswer(
            [_VERSION, rid, b"400", b"bad version", b"", b""], where, "", "bad ZAP version"
        )
    if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
        why = f"{mechanism.decode('ascii', 'replace')} without a CURVE key"
        return ZapAnswer([_VERSION, rid, b"400", b"CURVE required", b"", b""], where, "", why)
    key = z85.encode(credentials[0])
    text = key.decode("ascii")
    if key not in allowed:
        return ZapAnswer(
            [_VERSION, rid, b"400", b"key not allowed", b"", b""], where, text, "key not allowed"
        )
    return ZapAnswer([_VERSION, rid, b"200", b"OK", key, b""], where, text)


class RefusalLog:
    """Logs a refusal unless the same address and key were logged within a minute."""

    def __init__(self, clock: Clock | None = None, quiet_ms: int = _QUIET_MS) -> None:
        self._clock = clock or SystemClock()
        self._quiet_ms = quiet_ms
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, since)
        self.refused = 0

    def should_log(self, address: str, key: str) -> tuple[bool, int]:
        """Whether to log this refusal, and how many were kept quiet before it."""
        self.refused += 1
        now = self._clock.monotonic_ms()
        logged, quiet = self._last.get((address, key), (None, 0))
        if logged is not None and now - logged < self._quiet_ms:
            self._last[(address, key)] = (logged, quiet + 1)
            return False, quiet + 1
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[(address, key)] = (now, 0)
        return True, quiet


class AllowList:
    """The public keys allowed to connect: every ``*.key`` file of a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys: frozenset[bytes] = self._read()
        if not self.keys:
            raise ConfigError(
                f"no public keys in {directory}: nobody could connect "
                "(copy the allowed NAME.key files there, see mesh keys generate)"
            )

    def _read(self) -> frozenset[bytes]:
        if not self.directory.is_dir():
            raise ConfigError(f"the allow-list directory {self.directory} does not exist")
        keys = set()
        for path in sorted(self.directory.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(path)
                z85.decode(public)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read the allowed key {path}: {exc}") from None
            keys.add(public)
        return frozenset(keys)

    def reload(self) -> bool:
        """Read the directory again; on an error the old list stays (logged). Returns
        whether the new list was taken."""
        try:
            keys = self._read()
        except ConfigError as exc:
            log.error("allowed keys not reloaded, the %d old ones stay: %s", len(self.keys), exc)
            return False
        added, removed = len(keys - self.keys), len(self.keys - keys)
        self.keys = keys
        log.info(
            "allowed keys reloaded from %s: %d key(s), %d added, %d removed",
            self.directory,
            len(keys),
            added,
            removed,
        )
        return True


class ZapServer:
    """Answers a ZeroMQ context's ZAP requests from the running event loop."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], allow: AllowList, clock: Clock | None = None
    ) -> None:
        self.allow = allow
        self.refusals = RefusalLog(clock)
        self._loop = asyncio.get_running_loop()
        self._sock: zmq.Socket[bytes] = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        self._loop.add_reader(self._sock.FD, self._drain)

    def _drain(self) -> None:
        # The descriptor is edge-triggered: handle everything queued before returning.
        while not self._sock.closed and int(self._sock.get(zmq.EVENTS)) & zmq.POLLIN:
            request = self._sock.recv_multipart(zmq.NOBLOCK)
            result = answer(request, self.allow.keys)
            self._sock.send_multipart(result.reply, zmq.NOBLOCK)
            if result.refused is not None:
                self._refused(result)

    def _refused(self, result: ZapAnswer) -> None:
        show, quiet = self.refusals.should_log(result.address, result.key)
        if show:
            log.warning(
                "refused a connection from %s: %s%s (allowed keys: %s; add its NAME.key "
                "there and send SIGHUP)%s",
                result.address,
                result.refused,
                f" ({result.key})" if result.key else "",
                self.allow.directory,
                f"; {quiet} more refusal(s) not logged" if quiet else "",
            )

    def close(self) -> None:
        """Stop answering (pending handshakes then fail)."""
        if not self._sock.closed:
            self._loop.remove_reader(self._sock.FD)
            self._sock.close(linger=0)
