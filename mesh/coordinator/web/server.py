"""The HTTP server, as one more task of the coordinator's event loop (no thread, no
process): uvicorn, given a socket we bound ourselves.

uvicorn's ``serve()`` is made for a process of its own: it takes over SIGINT/SIGTERM
(the daemon owns them), polls for its exit every 0.1 s and sleeps 0.1 s more on the way
out (the time ``mesh run`` would take to stop, every time). So those three steps are
replaced, and its shutdown runs shielded from the cancellation that stops the
coordinator, so that the port is closed and no request is left running. Slow clients
never block the loop: responses are written through the transport's flow control, and
open connections get at most ``_GRACE_S`` to finish at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import anyio
import anyio.abc
import uvicorn
from starlette.types import ASGIApp

from mesh.coordinator.web.settings import HttpSettings
from mesh.errors import ConfigError

__all__ = ["HttpServer"]

log = logging.getLogger("mesh.coordinator.http")

# How long open requests may run on once the server is told to stop.
_GRACE_S = 1
_MAX_CONNECTIONS = 200


class HttpServer:
    """Serves ``app`` on a socket bound by ``bind_http``, until cancelled."""

    def __init__(self, app: ASGIApp, settings: HttpSettings, sock: socket.socket, url: str):
        self._app = app
        self._settings = settings
        self._sock = sock
        self.url = url

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on the socket until cancelled (it is closed then);
        ``task_status.started(url)`` once serving."""
        s, sock = self._settings, self._sock
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=_GRACE_S,
            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
            ssl_keyfile=str(s.tls_key) if s.tls_key else None,
            server_header=False,
            date_header=False,  # kept current by uvicorn's main loop, replaced here
            # Past this many connections and requests at once, a 503: file descriptors
            # are the coordinator's, and its nodes need them.
            limit_concurrency=_MAX_CONNECTIONS,
        )
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise ConfigError(f"cannot load the HTTP TLS certificate or key: {exc}") from None
        ready, stopping, ended = anyio.Event(), anyio.Event(), anyio.Event()
        server = _EmbeddedServer(config, ready, stopping)
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                try:
                    with anyio.CancelScope(shield=True):  # its shutdown runs to its end
                        await server.serve(sockets=[sock])
                finally:
                    ended.set()
                    ready.set()

            tg.start_soon(serve)
            try:
                await ready.wait()
                if ended.is_set() or not server.started:
                    raise ConfigError(f"the HTTP server on {self.url} did not start (see the log)")
                log.info("dashboard and REST API at %s/", self.url)
                task_status.started(self.url)
                await ended.wait()
            finally:
                stopping.set()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server as one task among the coordinator's: started as usual, told to
    stop by an event, and stopped without uvicorn's fixed sleeps."""

    def __init__(self, config: uvicorn.Config, ready: anyio.Event, stopping: anyio.Event):
        super().__init__(config)
        self._ready = ready
        self._stopping = stopping

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the coordinator's own handlers stay in place

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._ready.set()

    async def main_loop(self) -> None:
        await self._stopping.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await _stop(self, sockets or [])


async def _stop(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    """Stop at once: no new connections, idle ones closed, and requests still running
    (a savepoint waited for, a slow reader) given ``_GRACE_S`` before they are cut.
    """
    for listener in server.servers:
        listener.close()
    for sock in sockets:
        sock.close()
    state = server.server_state
    for connection in list(state.connections):
        connection.shutdown()  # an idle one closes now, a busy one after its answer
    with anyio.move_on_after(_GRACE_S):
        # uvicorn offers no event for its last connection closing.
        while state.connections or state.tasks:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    for task in list(state.tasks):
        task.cancel()
    for connection in list(state.connections):
        connection.transport.close()
