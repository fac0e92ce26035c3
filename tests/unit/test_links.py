"""watch_link on real ZeroMQ sockets: a link that drops is reported, and so is its
return (the peer's socket closes, then a new one binds the same port)."""

from __future__ import annotations

import anyio
import pytest

from mesh.transport.links import watch_link
from mesh.transport.sockets import SocketFactory, SocketKind


@pytest.mark.asyncio
async def test_a_dropped_link_is_reported_and_so_is_its_return() -> None:
    events: list[str] = []
    changed = anyio.Event()

    def note(what: str) -> None:
        nonlocal changed
        events.append(what)
        changed.set()
        changed = anyio.Event()

    with SocketFactory() as factory:
        server = factory.bind(SocketKind.PULL, "tcp://127.0.0.1:0")
        endpoint = server.endpoint
        client = factory.connect(SocketKind.PUSH, endpoint, watch_link_ms=100)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_link, client, lambda: note("drop"), lambda: note("back"))
            with anyio.fail_after(10):
                client.send_nowait([b"hello"])
                assert await server.recv() == [b"hello"]  # the link is up
                factory.release(server)  # the peer goes away
                while events != ["drop"]:
                    await changed.wait()
                server = factory.bind(SocketKind.PULL, endpoint)  # and comes back
                while events != ["drop", "back"]:
                    await changed.wait()
            tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_a_socket_without_a_link_watch_returns_at_once() -> None:
    with SocketFactory() as factory:
        sock = factory.connect(SocketKind.PUSH, "tcp://127.0.0.1:1")
        with anyio.fail_after(1):
            await watch_link(sock, lambda: None, lambda: None)
