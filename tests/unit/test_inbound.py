"""InboundConnections on real ZeroMQ sockets: senders are named by address and port, a
connection is cut at the limit-th bad message (not before; a new one starts from zero),
and a connection ZeroMQ cuts for an oversized message part is reported with its peer
while one its peer closes is not."""

from __future__ import annotations

import logging
import re

import anyio
import pytest

from mesh.transport.inbound import InboundConnections
from mesh.transport.links import watch_link
from mesh.transport.sockets import SocketFactory, SocketKind
from tests.helpers import poll_until

PEER = re.compile(r"^127\.0\.0\.1:(\d+)$")


class _Changes:
    """Notes callbacks and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = anyio.Event()

    def note(self, what: str) -> None:
        self.seen.append(what)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, expected: list[str]) -> None:
        while self.seen != expected:
            await self._changed.wait()


@pytest.mark.asyncio
async def test_a_connection_is_cut_at_the_limit_and_a_new_one_starts_afresh(caplog) -> None:
    caplog.set_level(logging.WARNING, "mesh.transport")
    link = _Changes()
    with SocketFactory() as factory:
        server = factory.bind(SocketKind.PULL, "tcp://127.0.0.1:0")
        peers = InboundConnections(server, "test port", limit=3, size_limit=("limit", 1 << 20))
        client = factory.connect(SocketKind.PUSH, server.endpoint, watch_link_ms=1000)
        async with anyio.create_task_group() as tg:
            tg.start_soon(peers.watch)
            tg.start_soon(watch_link, client, lambda: link.note("drop"), lambda: link.note("back"))
            with anyio.fail_after(10):
                names = []
                for n in range(2):  # two strikes: still connected
                    client.send_nowait([b"bad %d" % n])
                    frame = (await _recv(server))[0]
                    names.append(peers.peer_of(frame))
                    peers.strike(frame, "bad")
                client.send_nowait([b"good"])
                frame = (await _recv(server))[0]
                assert frame.bytes == b"good"  # the same connection still delivers
                assert peers.disconnected == 0 and link.seen == []
                peers.strike(frame, "bad again")  # the third: cut
                assert peers.disconnected == 1
                await link.wait_for(["drop", "back"])  # the client saw it, and reconnected

                client.send_nowait([b"after"])
                frame = (await _recv(server))[0]
                fresh = peers.peer_of(frame)
                peers.strike(frame, "bad")  # one strike on the new connection: no cut
            tg.cancel_scope.cancel()

    first = PEER.match(names[0])
    assert first is not None and names == [names[0]] * 2, names
    assert PEER.match(fresh) and fresh != names[0]  # a new connection, a new port
    assert peers.disconnected == 1
    cut = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert cut == [
        f"disconnected {names[0]} from the test port: 3 malformed or forged messages "
        "(the last: bad again)"
    ]


@pytest.mark.asyncio
async def test_an_oversized_message_part_is_reported_with_its_peer(caplog) -> None:
    caplog.set_level(logging.WARNING, "mesh.transport")
    oversize = _Changes()
    with SocketFactory() as factory:
        server = factory.bind(SocketKind.PULL, "tcp://127.0.0.1:0", max_message_bytes=1000)
        peers = InboundConnections(
            server,
            "data port",
            limit=0,
            size_limit=("max_frame_size", 1000),
            on_oversize=oversize.note,
        )
        polite = factory.connect(SocketKind.PUSH, server.endpoint)
        client = factory.connect(SocketKind.PUSH, server.endpoint)
        async with anyio.create_task_group() as tg:
            tg.start_soon(peers.watch)
            with anyio.fail_after(10):
                polite.send_nowait([b"bye"])
                client.send_nowait([b"hello"])
                seen = {}
                for _ in range(2):
                    frame = (await _recv(server))[0]
                    seen[frame.bytes] = peers.peer_of(frame)
                    peers.strike(frame, "ignored: limit 0")
                assert peers.connections == 2
                factory.release(polite)  # its peer closes: nothing to report
                await poll_until(
                    lambda: peers.connections,
                    until=lambda n: n == 1,
                    timeout_s=10,
                    what="the close",
                )
                client.send_nowait([bytes(200_000)])
                await oversize.wait_for([seen[b"hello"]])
            tg.cancel_scope.cancel()

    assert peers.disconnected == 0
    assert PEER.match(seen[b"hello"]) and seen[b"bye"] != seen[b"hello"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"the data port dropped the connection from {seen[b'hello']}: it sent a message "
        "part over max_frame_size (1000 bytes), or broke the ZeroMQ protocol"
    ]


async def _recv(sock):  # type: ignore[no-untyped-def]
    while True:
        frames = sock.recv_frames_nowait()
        if frames is not None:
            return frames
        await sock.wait_readable()
