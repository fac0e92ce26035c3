"""The connections into a bound socket: who sent a message, why a connection went,
and cutting off a peer that keeps sending garbage.

ZeroMQ hides its connections behind the socket, but not entirely: every received
message part carries the descriptor of the connection it came on (``SRCFD``), and the
socket's monitor reports each connection accepted and disconnected with that
descriptor. ``InboundConnections`` follows those events and keeps, per connection, a
duplicate of its descriptor and the peer's ``address:port``. With them:

* a peer whose messages are malformed or forged ``limit`` times on one connection is
  disconnected (its TCP connection is shut down; ZeroMQ sees it closed and drops it; a
  ZeroMQ peer reconnects and starts again from no strikes). ``SRCFD`` is a descriptor
  *number*: a message read after its connection went, once a new connection reused
  the number, counts against the new one, so a reconnecting peer may inherit the
  strikes of what its old connection left queued;
* a connection that ZeroMQ cuts on its own, silently, because the peer sent a message
  part over the socket's size limit (``MAXMSGSIZE``) or broke the wire protocol, is
  reported with the peer's address. The held duplicate keeps the kernel's socket
  open until the disconnect is handled, so what is still in it tells the cases apart:
  unread bytes mean ZeroMQ stopped reading in the middle of the stream (a cut); end of
  stream means the peer closed the connection (or we shut it down). ZeroMQ may stop
  after the first bytes of a part, before the rest has arrived: a connection with
  nothing in it yet is watched for up to ``_SETTLE_S`` until bytes or its end arrive.

The duplicates are never switched to blocking mode or given timeouts: they share the
open file with ZeroMQ's I/O thread. A connection accepted and gone before its events
are handled (a peer that connects and at once sends something oversized) cannot be
named any more; it is reported as an unknown peer.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import zmq
from zmq.utils.monitor import parse_monitor_message

from mesh.transport.sockets import Frame, Socket

__all__ = ["InboundConnections"]

log = logging.getLogger("mesh.transport")

_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
# How long a disconnected connection with nothing in it yet is watched for what the
# peer still sends (the rest of an oversized part) or its end.
_SETTLE_S = 0.5
_CHECK_S = 0.02


@dataclass(eq=False)
class _Connection:
    # A duplicate of ZeroMQ's descriptor (None when it could not be had).
    dup: socket.socket | None
    peer: str
    strikes: int = 0
    # Shut down by us: its end is not news.
    cut: bool = False


def _size_words(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


class InboundConnections:
    """Connections accepted by one bound socket (see the module docstring).

    ``role`` names the socket in log lines ("data port"); ``size_limit`` names its
    ``MAXMSGSIZE`` setting and value (``("max_frame_size", 1 << 20)``); ``limit`` is how many bad
    messages a connection may send before it is cut (0: never). ``on_oversize`` is told
    the peer of each connection ZeroMQ cut with bytes unread.
    """

    def __init__(
        self,
        sock: Socket,
        role: str,
        *,
        limit: int,
        size_limit: tuple[str, int],
        on_oversize: Callable[[str], None] | None = None,
    ) -> None:
        self._sock = sock
        self._role = role
        self._limit = limit
        self._size_limit = f"{size_limit[0]} ({_size_words(size_limit[1])})"
        self._on_oversize = on_oversize
        self._port = int(sock.endpoint.rsplit(":", 1)[1])
        self._monitor = sock.open_monitor(f"inproc://mesh-inbound-{id(self):x}", _EVENTS)
        self._connections: dict[int, _Connection] = {}
        # Disconnected, nothing read in them yet: (connection, until when to look).
        self._settling: list[tuple[_Connection, float]] = []
        #: Connections cut for sending ``limit`` bad messages.
        self.disconnected = 0

    @property
    def connections(self) -> int:
        """Connections open now (as far as the handled events say)."""
        return len(self._connections)

    async def watch(self) -> None:
        """Follow the socket's connections (runs until cancelled, then lets go of them)."""
        try:
            while True:
                if self._settling:
                    with anyio.move_on_after(_CHECK_S):
                        await self._monitor.wait_readable()
                else:
                    await self._monitor.wait_readable()
                self._handle_events()
                self._settle()
        finally:
            self.close()

    def close(self) -> None:
        """Let go of every held descriptor (ZeroMQ keeps its own)."""
        for connection in [*self._connections.values(), *(c for c, _ in self._settling)]:
            if connection.dup is not None:
                connection.dup.close()
        self._connections.clear()
        self._settling.clear()

    def peer_of(self, frame: Frame) -> str:
        """``address:port`` of the peer whose connection ``frame`` came on."""
        connection = self._connection_of(frame)
        return connection.peer if connection is not None else "unknown peer"

    def strike(self, frame: Frame, what: str) -> None:
        """Count one bad message (``what`` it was) against the connection ``frame`` came
        on; at the ``limit``-th, shut that connection down and log it."""
        if self._limit <= 0:
            return
        connection = self._connection_of(frame)
        if connection is None or connection.cut:
            return
        connection.strikes += 1
        if connection.strikes < self._limit or connection.dup is None:
            return
        connection.cut = True
        try:
            connection.dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            return  # already gone
        self.disconnected += 1
        log.warning(
            "disconnected %s from the %s: %d malformed or forged messages (the last: %s)",
            connection.peer,
            self._role,
            connection.strikes,
            what,
        )

    # -- following the monitor ----------------------------------------------------------

    def _connection_of(self, frame: Frame) -> _Connection | None:
        try:
            fd = int(frame.get(zmq.SRCFD))
        except (zmq.ZMQError, TypeError, ValueError):
            return None
        # The connection's ACCEPTED event was queued before any of its messages. A
        # message whose descriptor is not (or no longer) known came on a connection that
        # is gone: it is not adopted, lest a new connection on the reused number be
        # blamed for it.
        self._handle_events()
        return self._connections.get(fd)

    def _handle_events(self) -> None:
        events = []
        while (message := self._monitor.recv_nowait()) is not None:
            parsed = parse_monitor_message(message)
            events.append((int(parsed["event"]), int(parsed["value"])))
        for index, (event, fd) in enumerate(events):
            if event == zmq.EVENT_ACCEPTED:
                stale = self._connections.pop(fd, None)
                if stale is not None and stale.dup is not None:
                    stale.dup.close()  # a DISCONNECTED we never saw: not this connection
                if (zmq.EVENT_DISCONNECTED, fd) in events[index + 1 :]:
                    # Gone already: the descriptor may be another connection's by now.
                    self._connections[fd] = _Connection(None, "unknown peer")
                else:
                    self._connections[fd] = self._adopt(fd)
            elif event == zmq.EVENT_DISCONNECTED:
                connection = self._connections.pop(fd, None)
                if connection is not None:
                    self._ended(connection)

    def _adopt(self, fd: int) -> _Connection:
        """Hold a duplicate of ZeroMQ's descriptor ``fd`` and name its peer."""
        try:
            dup = socket.socket(fileno=os.dup(fd))
        except OSError:
            return _Connection(None, "unknown peer")
        try:
            if dup.getsockname()[1] != self._port:
                raise OSError("not one of ours")  # the number was reused elsewhere
            host, port = dup.getpeername()[:2]
        except OSError:
            dup.close()
            return _Connection(None, "unknown peer")
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return _Connection(dup, peer)

    def _ended(self, connection: _Connection) -> None:
        if connection.dup is None:
            return
        if not self._judge(connection, final=connection.cut):  # ours: no news
            self._settling.append((connection, time.monotonic() + _SETTLE_S))

    def _settle(self) -> None:
        now = time.monotonic()
        settling, self._settling = self._settling, []
        for connection, until in settling:
            if not self._judge(connection, final=now >= until):
                self._settling.append((connection, until))

    def _judge(self, connection: _Connection, *, final: bool = False) -> bool:
        """Whether the ended ``connection`` is judged (then its duplicate is closed):
        bytes unread are a cut, reported; its end or a failed link are not; nothing yet
        is judged later, or ``final``ly as nothing."""
        dup = connection.dup
        assert dup is not None
        try:
            pending: bytes | None = dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            pending = None  # nothing yet
        except OSError:
            pending = b""  # the link failed
        if pending is None and not final:
            return False
        dup.close()
        if pending and not connection.cut:
            log.warning(
                "the %s dropped the connection from %s: it sent a message part over %s, "
                "or broke the ZeroMQ protocol",
                self._role,
                connection.peer,
                self._size_limit,
            )
            if self._on_oversize is not None:
                self._on_oversize(connection.peer)
        return True
