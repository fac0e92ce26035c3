"""The one place where ZeroMQ sockets are created, configured and closed.

Every socket mesh uses comes from a ``SocketFactory``, so options that must hold
everywhere (linger, high-water marks as a tripwire, ROUTER_MANDATORY, keepalive, CURVE
keys) are set in one spot. With CURVE keys (``mesh.transport.curve``) every bound socket
is a CURVE server whose clients the factory's ZAP handler checks, and every connecting
socket a CURVE client that must be told which server it dials.

``Socket`` wraps a plain (synchronous) ZeroMQ socket: sends and receives are always
non-blocking, in tight loops, and a task awaits readiness only when nothing can be done
now. (``zmq.asyncio`` is not used: with NOBLOCK it never raises ``zmq.Again`` — it
returns a failed future and the message is lost — and it cannot see operations made on
a shadow socket.)

Readiness, and the trap it avoids: a ZeroMQ socket's file descriptor is
*edge-triggered* — it signals "something changed", and any send or receive may consume
that signal. So after every operation the socket's ``ZMQ_EVENTS`` are checked again
and waiting tasks are woken; the event loop's reader callback on the descriptor does the
same. A task that checked, found nothing, and registered its wait without an ``await``
in between can therefore never miss a message.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import zmq

from mesh.errors import TransportError
from mesh.time.clock import Clock, SystemClock

if TYPE_CHECKING:
    from mesh.transport.curve import Curve
    from mesh.transport.zap import ZapServer

__all__ = [
    "LINK_EVENTS",
    "Endpoint",
    "Frame",
    "Outbox",
    "Socket",
    "SocketFactory",
    "SocketKind",
    "frame_peer",
    "parse_endpoint",
]

#: A received message part (zero-copy): ``.buffer``, ``.bytes``; see ``frame_peer``.
Frame = zmq.Frame


def frame_peer(frame: Frame) -> str:
    """The address of the peer that sent ``frame`` ("unknown peer" if ZeroMQ cannot say)."""
    try:
        return str(frame.get("Peer-Address"))
    except zmq.ZMQError:
        return "unknown peer"


log = logging.getLogger("mesh.transport")

_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)

# What a link watched for loss reports (see ``SocketFactory.connect``).
LINK_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED

_ENDPOINT = re.compile(r"^tcp://(?P<host>[^:/\s]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5}|\*)$")


class SocketKind(Enum):
    """The socket types mesh uses."""

    ROUTER = zmq.ROUTER
    DEALER = zmq.DEALER
    PUSH = zmq.PUSH
    PULL = zmq.PULL
    PAIR = zmq.PAIR


class Endpoint(str):
    """A validated ``tcp://host:port`` address."""

    __slots__ = ()


def parse_endpoint(value: str, *, allow_wildcard_port: bool = False) -> Endpoint:
    """Validate a ``tcp://host:port`` endpoint; raises ValueError saying what is wrong."""
    match = _ENDPOINT.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected an address like tcp://127.0.0.1:5550, got {value!r}")
    port = match.group("port")
    if port == "*" or port == "0":
        if not allow_wildcard_port:
            raise ValueError(f"a concrete port is needed to connect, got {value!r}")
    elif not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1..65535, got {port} in {value!r}")
    return Endpoint(value.strip())


class Socket:
    """A ZeroMQ socket used without blocking from the asyncio event loop."""

    __slots__ = ("_loop", "_sock", "_waiters", "endpoint", "kind", "monitor")

    def __init__(self, sock: zmq.Socket[bytes], kind: SocketKind, endpoint: str) -> None:
        self._sock = sock
        self.kind = kind
        self.endpoint = endpoint
        # Tasks waiting for readiness: (POLLIN or POLLOUT, event to set).
        self._waiters: list[tuple[int, anyio.Event]] = []
        # The loop watching the descriptor, while someone waits.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Handshake events of a connecting socket, if asked for (``SocketFactory.connect``).
        self.monitor: Socket | None = None

    @property
    def closed(self) -> bool:
        """Whether the socket was closed."""
        return bool(self._sock.closed)

    def _check_events(self) -> None:
        """Wake the waiters whose condition holds (called after every operation)."""
        if not self._waiters or self._sock.closed:
            return
        events = int(self._sock.get(zmq.EVENTS))
        waiting = []
        for flag, event in self._waiters:
            if events & flag:
                event.set()
            else:
                waiting.append((flag, event))
        self._waiters = waiting
        if not waiting:
            self._stop_watching()

    def _stop_watching(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.FD)
            self._loop = None

    async def _wait(self, flag: int) -> None:
        if int(self._sock.get(zmq.EVENTS)) & flag:
            await anyio.lowlevel.checkpoint()
            return
        waiter = (flag, anyio.Event())
        self._waiters.append(waiter)
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._sock.FD, self._check_events)
        try:
            await waiter[1].wait()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._stop_watching()

    def send_nowait(self, frames: Sequence[bytes | memoryview]) -> bool:
        """Send now if the socket can take it; False when it would block.

        For a ROUTER (with ROUTER_MANDATORY) an unknown or gone peer raises
        ``zmq.ZMQError`` with ``EHOSTUNREACH``.
        """
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        finally:
            self._check_events()
        return True

    async def send(self, frames: Sequence[bytes | memoryview]) -> None:
        """Send, waiting for room if the socket is full."""
        while not self.send_nowait(frames):
            await self.wait_writable()

    def recv_nowait(self) -> list[bytes] | None:
        """The next message's frames, or None if nothing is queued."""
        try:
            return self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        finally:
            self._check_events()

    def recv_frames_nowait(self) -> list[zmq.Frame] | None:
        """Like ``recv_nowait`` but zero-copy ``zmq.Frame`` objects (``.buffer``, peer info)."""
        try:
            return self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        finally:
            self._check_events()

    async def wait_writable(self) -> None:
        """Return once a message can be sent."""
        await self._wait(zmq.POLLOUT)

    async def wait_readable(self) -> None:
        """Return once a message can be received."""
        await self._wait(zmq.POLLIN)

    async def recv(self) -> list[bytes]:
        """Wait for and return the next message."""
        while True:
            frames = self.recv_nowait()
            if frames is not None:
                return frames
            await self.wait_readable()

    def open_monitor(self, address: str, events: int) -> Socket:
        """Start reporting this socket's ``events`` on a PAIR socket (``self.monitor``)."""
        self._sock.monitor(address, events)
        pair: zmq.Socket[bytes] = self._sock.context.socket(zmq.PAIR)
        pair.setsockopt(zmq.LINGER, 0)
        pair.connect(address)
        self.monitor = Socket(pair, SocketKind.PAIR, address)
        return self.monitor

    def close_monitor(self) -> None:
        """Stop reporting events (``open_monitor``)."""
        if self.monitor is not None:
            if not self._sock.closed:
                self._sock.disable_monitor()
            self.monitor.close()
            self.monitor = None

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; pending messages are kept for at most ``linger_ms``."""
        self.close_monitor()
        if not self._sock.closed:
            self._stop_watching()
            for _, event in self._waiters:
                event.set()  # waiters find the socket closed
            self._waiters = []
            self._sock.close(linger=linger_ms)


class Outbox:
    """Sends through one socket without blocking the caller.

    ``send`` goes straight to the socket when it has room and nothing is queued;
    otherwise the frames wait in order and ``pump`` (a task of the owner) sends them as
    room appears. For a ROUTER, a message to a peer that is not connected is dropped
    and logged (ROUTER_MANDATORY reports it instead of dropping silently).
    """

    def __init__(self, sock: Socket) -> None:
        self.sock = sock
        self._pending: deque[Sequence[bytes]] = deque()
        self._wakeup = anyio.Event()
        self.dropped = 0

    def _try(self, frames: Sequence[bytes]) -> bool:
        try:
            return self.sock.send_nowait(frames)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.dropped += 1
            peer = bytes(frames[0]).decode("utf-8", "replace")
            log.warning("dropped a message to %r: not connected to %s", peer, self.sock.endpoint)
            return True

    def send(self, frames: Sequence[bytes]) -> None:
        """Send ``frames`` after everything sent before them.

        Raises TransportError once the socket was closed.
        """
        if self.sock.closed:
            raise TransportError(f"the connection to {self.sock.endpoint} was closed")
        if self._pending or not self._try(frames):
            self._pending.append(frames)
            self._wakeup.set()

    @property
    def queued(self) -> int:
        """Messages waiting for room in the socket."""
        return len(self._pending)

    async def pump(self) -> None:
        """Send queued messages as the socket makes room (runs until cancelled)."""
        while True:
            while self._pending:
                if self._try(self._pending[0]):
                    self._pending.popleft()
                else:
                    await self.sock.wait_writable()
            self._wakeup = anyio.Event()
            await self._wakeup.wait()


_RECONNECT_FIRST_MS = 10
_RECONNECT_MAX_MS = 100


class SocketFactory:
    """Creates every socket of a process from one ZeroMQ context."""

    def __init__(
        self,
        *,
        high_water_mark: int = 100_000,
        clock: Clock | None = None,
        curve: Curve | None = None,
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._hwm = high_water_mark
        self._clock: Clock = clock or SystemClock()
        self.curve = curve
        # Answers the CURVE handshakes of bound sockets; serving before any is bound.
        self._zap: ZapServer | None = None
        if curve is not None and curve.allow is not None:
            from mesh.transport.zap import ZapServer

            self._zap = ZapServer(self._context, curve.allow)
        self._sockets: set[Socket] = set()
        # Released sockets still delivering what they hold: (deadline in monotonic ms, socket).
        # They stay open (ZeroMQ's I/O thread keeps sending) until the deadline, and are
        # closed without waiting when the factory closes, so shutdown never blocks on them.
        self._draining: list[tuple[float, Socket]] = []

    def _new(
        self, kind: SocketKind, identity: str | None, hwm: int | None = None
    ) -> zmq.Socket[bytes]:
        sock = self._context.socket(kind.value)
        sock.setsockopt(zmq.LINGER, 0)
        # Credits bound what is in flight; the HWM is only a tripwire far above that
        # (connectors to outside systems pass a small one: it is their backpressure).
        sock.setsockopt(zmq.SNDHWM, hwm or self._hwm)
        sock.setsockopt(zmq.RCVHWM, hwm or self._hwm)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if kind is SocketKind.ROUTER:
            # A ROUTER silently drops what it cannot deliver unless told to complain.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A peer that reconnects (its old connection not yet seen dead here) takes its
            # identity over; otherwise its new connection would be refused.
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity.encode())
        return sock

    def bind(
        self,
        kind: SocketKind,
        endpoint: str,
        *,
        identity: str | None = None,
        max_message_bytes: int | None = None,
    ) -> Socket:
        """Create a socket bound to ``endpoint``; port ``0`` or ``*`` picks a free port.

        ``Socket.endpoint`` is the address actually bound. With ``max_message_bytes``,
        ZeroMQ drops the connection of a peer that sends a larger message part, before
        any of it is handed to us (``MAXMSGSIZE``; set before binding, as the listener
        copies its options then).
        """
        parse_endpoint(endpoint, allow_wildcard_port=True)
        address = re.sub(r":0$", ":*", endpoint.strip())
        sock = self._new(kind, identity)
        if max_message_bytes is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        if self.curve is not None:
            if self._zap is None:
                sock.close(linger=0)
                raise TransportError(f"cannot bind {endpoint} with CURVE: no allow-list")
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.pair.secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.pair.public)
            sock.setsockopt(zmq.ZAP_DOMAIN, b"mesh")
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no handler: nobody gets in
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(f"cannot bind {endpoint}: {exc}") from None
        bound = sock.getsockopt(zmq.LAST_ENDPOINT)
        actual = bound.decode() if isinstance(bound, bytes) else str(bound)
        wrapped = Socket(sock, kind, actual)
        self._sockets.add(wrapped)
        self._close_drained()
        return wrapped

    def connect(
        self,
        kind: SocketKind,
        endpoint: str,
        *,
        identity: str | None = None,
        high_water_mark: int | None = None,
        server: Sequence[str] = (),
        watch_handshake: bool = False,
        watch_link_ms: int | None = None,
        outside: bool = False,
    ) -> Socket:
        """Create a socket connected to ``endpoint`` (the connection is made in the background).

        With CURVE keys, ``server`` names the server dialled (the names its public key
        is looked up by, first found wins; ConfigError if none is found). With
        ``watch_handshake`` the socket's ``monitor`` reports its handshake events
        (see ``mesh.transport.handshake``). With ``watch_link_ms`` the connection is
        pinged that often (ZeroMQ heartbeats) and dropped after three pings unanswered,
        and ``monitor`` reports ``LINK_EVENTS`` (see ``mesh.transport.links``). An
        ``outside`` socket talks to a system outside the cluster (a connector's): never
        CURVE.
        """
        parse_endpoint(endpoint)
        sock = self._new(kind, identity, high_water_mark)
        # A peer not listening yet (daemons started together) is tried again after 10 ms,
        # doubling up to ZeroMQ's usual 100 ms, rather than 100 ms from the first miss.
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_FIRST_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_MAX_MS)
        if watch_link_ms is not None:
            sock.setsockopt(zmq.HEARTBEAT_IVL, watch_link_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * watch_link_ms)
            sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * watch_link_ms)
        if self.curve is not None and not outside:
            if not server:
                sock.close(linger=0)
                raise TransportError(f"connecting to {endpoint} with CURVE needs the server's name")
            try:
                server_key = self.curve.server_key(server)
            except BaseException:
                sock.close(linger=0)
                raise
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.pair.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.curve.pair.secret)
        wrapped = Socket(sock, kind, endpoint)
        if watch_handshake:
            wrapped.open_monitor(f"inproc://mesh-monitor-{id(wrapped):x}", _HANDSHAKE_EVENTS)
        elif watch_link_ms is not None:
            wrapped.open_monitor(f"inproc://mesh-monitor-{id(wrapped):x}", LINK_EVENTS)
        sock.connect(endpoint.strip())
        self._sockets.add(wrapped)
        return wrapped

    def release(self, sock: Socket, *, drain_ms: int = 0) -> None:
        """Stop using ``sock``. With ``drain_ms``, messages it still holds keep going out
        in the background for up to that long (while the factory lives); else it closes
        now and drops them."""
        self._sockets.discard(sock)
        if drain_ms > 0:
            self._draining.append((self._clock.monotonic_ms() + drain_ms, sock))
        else:
            sock.close()
        self._close_drained()

    def _close_drained(self, *, everything: bool = False) -> None:
        now = self._clock.monotonic_ms()
        keep = []
        for deadline, sock in self._draining:
            if everything or deadline <= now:
                sock.close()
            else:
                keep.append((deadline, sock))
        self._draining = keep

    def close(self) -> None:
        """Close every socket made here (dropping what they hold), then the context."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._close_drained(everything=True)
        if self._zap is not None:
            self._zap.close()
        self._context.term()

    def __enter__(self) -> SocketFactory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
