"""Sink operators: a ``SinkWriter`` (``mesh.connectors``) at the end of a chain, and the
built-in writers that emit at once (Print, Collect, ZmqPush)."""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

from mesh.api import sinks
from mesh.connectors.base import SinkWriter
from mesh.errors import GraphError
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.base import RestoredState, RuntimeOperator
from mesh.node.operators.context import TaskContext
from mesh.node.operators.records import encode_batch, encode_lines
from mesh.transport.sockets import Socket, SocketKind

_DELIVERY_DRAIN_MS = 60_000

__all__ = ["CollectWriter", "PrintWriter", "SinkOperator", "ZmqPushWriter"]


class SinkOperator(RuntimeOperator):
    """The last operator of a chain: records go out of the job through its writer.

    This one drives a writer whose output is final at once (Print, Collect, ZmqPush, an
    at-least-once Kafka sink): at-least-once across restarts, as far as ``flush`` at
    each checkpoint makes it. ``TwoPhaseSink`` adds a committer for exactly-once output.
    """

    def __init__(self, spec: OperatorSpec, writer: SinkWriter) -> None:
        super().__init__(spec)
        self.writer = writer

    @property
    def needs_settle(self) -> bool:
        """True when ``settle`` must be awaited after every batch (the sink can fall
        behind)."""
        return self.writer.backpressured

    def process(self, batch: list[Any]) -> list[Any]:
        self.writer.write(batch)
        return []

    async def settle(self) -> None:
        """Wait until the sink has room again (awaiting here is the sink's backpressure)."""
        await self.writer.wait_writable()

    async def initialize(self, restored: RestoredState | None) -> None:
        await self.writer.open()

    async def flush(self) -> None:
        """At a checkpoint barrier, before the snapshot: make what was written durable."""
        await self.writer.flush()

    async def run_commits(self) -> None:
        """A task of the subtask for as long as it runs (two-phase sinks commit here)."""

    async def end_of_input(self) -> bool:
        """The input ended. True when output waits for ``commit_final`` (the job's end)."""
        await self.writer.flush()
        return False

    async def commit_final(self) -> None:
        """Every subtask of the job ended: make the last output visible."""
        self.writer.finish()

    async def commit_all(self) -> None:
        """The job was cancelled and has no checkpoints: make what was written visible."""
        self.writer.finish()

    def abort(self) -> None:
        """The subtask failed or was cancelled: drop output that was not made visible."""
        self.writer.abort()

    def close(self) -> None:
        self.writer.close()


class PrintWriter(SinkWriter):
    """``sinks.Print``: JSON lines on the node's stdout."""

    def __init__(self, spec: OperatorSpec, sink: sinks.Print, ctx: TaskContext) -> None:
        self.spec = spec
        self.prefix = f"{ctx.subtask_index + 1}> " if ctx.parallelism > 1 else ""

    def write(self, records: list[Any]) -> None:
        encoded = encode_lines(self.spec, records)
        if self.prefix:  # split on JSON's line ends only (str.splitlines also splits U+2028)
            prefix = self.prefix.encode()
            encoded = b"".join(prefix + line + b"\n" for line in encoded.split(b"\n")[:-1])
        sys.stdout.write(encoded.decode())
        sys.stdout.flush()


class CollectWriter(SinkWriter):
    """``sinks.Collect``: batches sent to the client that runs the job."""

    def __init__(self, spec: OperatorSpec, sink: sinks.Collect, ctx: TaskContext) -> None:
        if ctx.collect is None:
            raise GraphError(f"sink {spec.uid!r}: Collect needs a client to send records to")
        self.spec = spec
        self._send = ctx.collect

    def write(self, records: list[Any]) -> None:
        if records:
            self._send(encode_batch(self.spec, records))


class ZmqPushWriter(SinkWriter):
    """``sinks.ZmqPush``: one JSON message per record to an outside PULL socket."""

    backpressured = True

    def __init__(self, spec: OperatorSpec, sink: sinks.ZmqPush, ctx: TaskContext) -> None:
        if ctx.sockets is None:
            raise GraphError(f"sink {spec.uid!r}: ZmqPush needs the node's socket factory")
        self.spec = spec
        self._factory = ctx.sockets
        self._endpoint = sink.endpoint
        self._hwm = sink.high_water_mark
        self._sock: Socket | None = None
        # Encoded messages not yet taken by the socket, oldest first.
        self._pending: deque[bytes] = deque()

    async def open(self) -> None:
        self._sock = self._factory.connect(
            SocketKind.PUSH, self._endpoint, high_water_mark=self._hwm, outside=True
        )

    def write(self, records: list[Any]) -> None:
        pending = self._pending
        for line in encode_lines(self.spec, records).splitlines():
            pending.append(line)
        self._send_ready()

    def _send_ready(self) -> None:
        pending = self._pending
        sock = self._sock
        assert sock is not None, "write before open"
        while pending and sock.send_nowait([pending[0]]):
            pending.popleft()

    async def wait_writable(self) -> None:
        while self._pending:
            assert self._sock is not None
            await self._sock.wait_writable()
            self._send_ready()

    def finish(self) -> None:
        # What the socket still holds is delivered in the background for up to a
        # minute (or until the node stops).
        if self._sock is not None:
            self._factory.release(self._sock, drain_ms=_DELIVERY_DRAIN_MS)
            self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            self._factory.release(self._sock)
            self._sock = None
