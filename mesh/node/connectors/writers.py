"""Sink writers: the runtime side of ``mesh.sinks``."""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

from mesh.api import sinks
from mesh.errors import GraphError
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.context import TaskContext
from mesh.node.operators.records import encode_batch, encode_lines
from mesh.transport.sockets import Socket, SocketKind

_DELIVERY_DRAIN_MS = 60_000

__all__ = ["CollectSink", "PrintSink", "SinkOperator", "ZmqPushSink"]


class SinkOperator(RuntimeOperator):
    """The last operator of a chain: records go out of the job here.

    Transactional sinks (``TransactionalSink``) make output visible only when the
    checkpoint covering it completes; the others (Print, Collect, ZmqPush) emit at once
    and are at-least-once across restarts.
    """

    #: True when ``settle`` must be awaited after every batch (the sink can fall behind).
    needs_settle = False

    async def settle(self) -> None:
        """Wait until the sink has room again (awaiting here is the sink's backpressure)."""

    def end_of_input(self) -> bool:
        """The input ended. True when output waits for ``commit_final`` (the job's end)."""
        return False

    def commit_final(self) -> None:
        """Every subtask of the job ended: make the last output visible."""

    def commit_all(self) -> None:
        """The job was cancelled and has no checkpoints: make what was written visible."""

    def abort(self) -> None:
        """The subtask failed or was cancelled: drop output that was not made visible."""


class PrintSink(SinkOperator):
    def __init__(self, spec: OperatorSpec, sink: sinks.Print, ctx: TaskContext) -> None:
        super().__init__(spec)
        self.prefix = f"{ctx.subtask_index + 1}> " if ctx.parallelism > 1 else ""

    def process(self, batch: list[Any]) -> list[Any]:
        encoded = encode_lines(self.spec, batch)
        if self.prefix:  # split on JSON's line ends only (str.splitlines also splits U+2028)
            prefix = self.prefix.encode()
            encoded = b"".join(prefix + line + b"\n" for line in encoded.split(b"\n")[:-1])
        sys.stdout.write(encoded.decode())
        sys.stdout.flush()
        return []


class CollectSink(SinkOperator):
    def __init__(self, spec: OperatorSpec, sink: sinks.Collect, ctx: TaskContext) -> None:
        super().__init__(spec)
        if ctx.collect is None:
            raise GraphError(f"sink {spec.uid!r}: Collect needs a client to send records to")
        self._send = ctx.collect

    def process(self, batch: list[Any]) -> list[Any]:
        if batch:
            self._send(encode_batch(self.spec, batch))
        return []


class ZmqPushSink(SinkOperator):
    needs_settle = True

    def __init__(self, spec: OperatorSpec, sink: sinks.ZmqPush, ctx: TaskContext) -> None:
        super().__init__(spec)
        if ctx.sockets is None:
            raise GraphError(f"sink {spec.uid!r}: ZmqPush needs the node's socket factory")
        self._factory = ctx.sockets
        self._endpoint = sink.endpoint
        self._hwm = sink.high_water_mark
        self._sock: Socket | None = None
        # Encoded messages not yet taken by the socket, oldest first.
        self._pending: deque[bytes] = deque()

    def open(self) -> None:
        self._sock = self._factory.connect(
            SocketKind.PUSH, self._endpoint, high_water_mark=self._hwm, outside=True
        )

    def process(self, batch: list[Any]) -> list[Any]:
        pending = self._pending
        for line in encode_lines(self.spec, batch).splitlines():
            pending.append(line)
        self._send_ready()
        return []

    def _send_ready(self) -> None:
        pending = self._pending
        sock = self._sock
        assert sock is not None, "process before open"
        while pending and sock.send_nowait([pending[0]]):
            pending.popleft()

    async def settle(self) -> None:
        while self._pending:
            assert self._sock is not None
            await self._sock.wait_writable()
            self._send_ready()

    def commit_final(self) -> None:
        # What the socket still holds is delivered in the background for up to a
        # minute (or until the node stops).
        if self._sock is not None:
            self._factory.release(self._sock, drain_ms=_DELIVERY_DRAIN_MS)
            self._sock = None

    def commit_all(self) -> None:
        self.commit_final()

    def close(self) -> None:
        if self._sock is not None:
            self._factory.release(self._sock)
            self._sock = None
