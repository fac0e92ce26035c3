"""The embedded HTTP server's socket (mesh/coordinator/web/server.py)."""

from __future__ import annotations

import signal
import socket

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mesh.coordinator.web.server import HttpServer
from mesh.coordinator.web.settings import HttpSettings, bind_http, parse_http_address
from mesh.errors import ConfigError


def test_the_listening_socket_is_tcp_so_answers_are_not_delayed() -> None:
    """asyncio disables Nagle's algorithm only on connections accepted from an
    IPPROTO_TCP socket; protocol 0 left each answer on a kept-open connection waiting
    about 40 ms for the client's delayed ACK."""
    sock, url = bind_http(HttpSettings("127.0.0.1", 0))
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
        assert url == f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_taken_port_is_a_config_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve HTTP on 127.0.0.1:{port}"):
            bind_http(HttpSettings("127.0.0.1", port))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("127.0.0.1:8081", ("127.0.0.1", 8081)), ("[::1]:0", ("::1", 0)), ("host:1", ("host", 1))],
)
def test_http_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_http_address(text) == parsed


@pytest.mark.parametrize("text", ["8081", ":8081", "host:", "host:http", "host:70000", ""])
def test_bad_http_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_http_address(text)


async def _hang(request: Request) -> Response:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_stopping_closes_the_port_cuts_hanging_requests_and_keeps_signals() -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    app = Starlette(routes=[Route("/hang", _hang), Route("/ok", _ok)])
    settings = HttpSettings("127.0.0.1", 0)
    server = HttpServer(app, settings, *bind_http(settings))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            url = await tg.start(server.run)
            port = int(url.rsplit(":", 1)[1])
            assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
            ok = await anyio.connect_tcp("127.0.0.1", port)
            await ok.send(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await ok.receive()).startswith(b"HTTP/1.1 200")  # now idle, kept open
            hanging = await anyio.connect_tcp("127.0.0.1", port)
            await hanging.send(b"GET /hang HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        # Stopped: the idle connection closed at once, the hanging one cut after the grace.
        for stream in (ok, hanging):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                while await stream.receive():
                    pass
            await stream.aclose()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", port)


async def _ok(request: Request) -> Response:
    return Response(b"ok")
