"""Request/reply and one-way control messages over a DEALER socket.

``ControlConnection`` wraps the DEALER a node or a client uses to talk to a ROUTER:
``send`` is one-way, ``request`` waits for the reply with the same request id, and
``serve`` is the receive loop that resolves replies and hands every other message to a
handler. Short-lived clients call ``request`` without ``serve``; it then reads the
socket itself until its reply arrives.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from mesh.errors import FrameError, RemoteError
from mesh.protocol import codec
from mesh.protocol.messages import ErrorReply
from mesh.transport.drops import DropCounter
from mesh.transport.sockets import Outbox, Socket

__all__ = ["ControlConnection"]

log = logging.getLogger("mesh.transport.control")

Handler = Callable[[codec.Envelope], Awaitable[None]]


class _Pending:
    __slots__ = ("done", "envelope")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.envelope: codec.Envelope | None = None


class ControlConnection:
    """Control messages over one DEALER socket."""

    def __init__(self, sock: Socket, *, peer: str) -> None:
        self._sock = sock
        self.peer = peer
        self._rids = itertools.count()
        self._prefix = f"{os.getpid():x}-"
        # Requests waiting for their reply, by request id.
        self._pending: dict[str, _Pending] = {}
        # True while ``serve`` owns the receiving side of the socket.
        self._serving = False
        # Without ``serve``, one request at a time reads the socket and hands the other
        # requests their replies (the lock is fair: a request whose reply came in gets
        # the lock before the reader takes it again).
        self._reading = anyio.Lock()
        # Messages that did not fit into the socket yet, in order; ``serve`` sends them.
        self._outbox = Outbox(sock)
        self.drops = DropCounter(log)

    async def send(self, msg: Any, *, rid: str | None = None) -> None:
        """Send ``msg`` without waiting for an answer (behind anything queued before)."""
        frames = codec.encode(msg, rid=rid)
        if self._outbox.queued:
            self._outbox.send(frames)
        else:
            await self._sock.send(frames)

    def send_nowait(self, msg: Any) -> None:
        """Queue ``msg``; it goes out now if the socket has room, else from ``serve``."""
        self._outbox.send(codec.encode(msg))

    async def request(self, msg: Any, *, timeout_s: float | None) -> Any:
        """Send ``msg`` and return the reply's message.

        Raises RemoteError if the peer answered with an error, TimeoutError if it did not
        answer within ``timeout_s``.
        """
        rid = self._prefix + str(next(self._rids))
        pending = _Pending()
        self._pending[rid] = pending
        try:
            with anyio.fail_after(timeout_s):
                await self._sock.send(codec.encode(msg, rid=rid))
                if self._serving:
                    await pending.done.wait()
                else:
                    while pending.envelope is None:
                        async with self._reading:
                            if pending.envelope is None:
                                self._dispatch_reply(await self._sock.recv())
        except TimeoutError:
            raise TimeoutError(
                f"no answer from {self.peer} within {timeout_s:g}s (is it running?)"
            ) from None
        finally:
            self._pending.pop(rid, None)
        assert pending.envelope is not None
        reply = pending.envelope.message
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply.message, code=reply.code)
        return reply

    def _decode(self, frames: list[bytes]) -> codec.Envelope | None:
        try:
            return codec.decode(frames)
        except FrameError as exc:
            self.drops.drop("malformed", f"{exc} (from {self.peer})")
            return None

    def _dispatch_reply(self, frames: list[bytes]) -> codec.Envelope | None:
        """Resolve a pending request; returns the envelope if it was not a reply."""
        envelope = self._decode(frames)
        if envelope is None:
            return None
        if envelope.rid is not None:
            pending = self._pending.get(envelope.rid)
            if pending is not None:
                pending.envelope = envelope
                pending.done.set()
                return None
        return envelope

    async def serve(
        self,
        handler: Handler,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive forever: replies resolve requests, everything else goes to ``handler``.

        Also sends what ``send_nowait`` could not send at once. Start it with
        ``await tg.start(conn.serve, handler)``: once started, ``request`` leaves the
        socket to this loop (two readers would steal each other's replies).
        """
        self._serving = True
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._outbox.pump)
                while True:
                    envelope = self._dispatch_reply(await self._sock.recv())
                    if envelope is not None:
                        try:
                            await handler(envelope)
                        except Exception:  # a bug handling one message must not stop the loop
                            log.exception(
                                "error handling %s from %s",
                                type(envelope.message).__name__,
                                self.peer,
                            )
        finally:
            self._serving = False
