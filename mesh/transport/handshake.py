"""Waiting for a connecting socket's CURVE handshake, to say why it failed.

A server that refuses a client's key (or a client that has the wrong server key) does
not answer anything: the client's messages just never go out. A socket monitor tells
which: ``HANDSHAKE_SUCCEEDED``, ``HANDSHAKE_FAILED_AUTH`` (the server's ZAP handler
refused our key), ``HANDSHAKE_FAILED_NO_DETAIL`` (the server could not decrypt our
hello: we hold the wrong server key), ``HANDSHAKE_FAILED_PROTOCOL`` (one side uses
CURVE, the other not).
"""

from __future__ import annotations

import anyio
import zmq
from zmq.utils.monitor import parse_monitor_message

from mesh.errors import TransportError
from mesh.transport.sockets import Socket

__all__ = ["HandshakeFailed", "describe_failure", "wait_handshake"]


class HandshakeFailed(TransportError):
    """The server did not complete a CURVE handshake with us."""


def describe_failure(event: int | None, what: str, me: str = "client") -> str:
    """Why the handshake with ``what`` (like "the coordinator at ADDR") failed (pure);
    ``event`` is the failure event, None for no handshake in time."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            f"{what} did not accept this {me}'s key: check --keys "
            "(is its public key in the server's allow-list?)"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return f"{what} did not accept the handshake: the server key in --keys is not {what}'s"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return f"{what} does not speak CURVE (was it started without --keys?)"
    return (
        f"no secure handshake with {what}: it did not accept this {me}'s key "
        "(or is not running, or runs without keys): check --keys"
    )


async def wait_handshake(sock: Socket, what: str, *, timeout_s: float, me: str = "client") -> None:
    """Return once ``sock`` (connected with ``watch_handshake``) completed a handshake;
    raise HandshakeFailed saying why it did not (a failure, or none within
    ``timeout_s``). The monitor is closed either way."""
    monitor = sock.monitor
    if monitor is None:
        raise TransportError(f"no handshake monitor on the socket to {sock.endpoint}")
    failed: int | None = None
    try:
        with anyio.move_on_after(timeout_s):
            while True:
                event = parse_monitor_message(await monitor.recv())["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return
                failed = event
                if event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                    break  # final; NO_DETAIL may be a passing network fault: wait on
    finally:
        sock.close_monitor()
    raise HandshakeFailed(describe_failure(failed, what, me))
