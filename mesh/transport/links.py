"""Watching a connecting socket's link: when it drops and when it is back.

A socket connected with ``watch_link_ms`` (``SocketFactory.connect``) pings its peer
with ZeroMQ heartbeats; ZeroMQ drops the connection when three pings in a row go
unanswered (the peer is gone, or the network between us is cut) and reconnects on its
own. ``watch_link`` turns the socket's monitor events into calls: ``on_drop`` for each
drop of a link that had been up, ``on_back`` when it is up again after one.
"""

from __future__ import annotations

from collections.abc import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from mesh.transport.sockets import Socket

__all__ = ["watch_link"]


async def watch_link(
    sock: Socket, on_drop: Callable[[], None], on_back: Callable[[], None]
) -> None:
    """Report ``sock``'s link going down and coming back (runs until cancelled; returns
    at once for a socket connected without ``watch_link_ms``). While a link is down,
    ZeroMQ may drop what was queued for it."""
    monitor = sock.monitor
    if monitor is None:
        return
    up = dropped = False
    while True:
        event = parse_monitor_message(await monitor.recv())["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            up = True
            if dropped:
                dropped = False
                on_back()
        elif event == zmq.EVENT_DISCONNECTED and up:
            up, dropped = False, True
            on_drop()
