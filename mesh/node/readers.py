"""Source readers: the runtime side of ``mesh.sources``.

A reader hands out batches of records (``read``) until its share of the input ends
(``None``). It keeps its position (item index, or file and byte offset) so later
checkpoints can record and rewind it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from typing import Any

import orjson

from mesh.api import sources
from mesh.errors import GraphError, RecordError
from mesh.node.context import TaskContext
from mesh.node.operators import UserCodeError, first_failure
from mesh.node.splits import FileRange, plan_splits
from mesh.transport.sockets import Socket, SocketKind

__all__ = ["SourceReader", "build_reader"]

_CHUNK = 1 << 20


class SourceReader:
    """Produces the records of one source subtask.

    Constructing a reader only checks its settings; ``open`` acquires what it reads
    from (files are opened lazily, sockets connect here) and ``close`` releases it.
    """

    def open(self) -> None:
        """Called once, before the first ``read``."""

    async def read(self, max_records: int) -> list[Any] | None:
        """Up to ``max_records`` records, ``[]`` if none are ready yet, None at the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and sockets."""


class _CollectionReader(SourceReader):
    def __init__(self, source: sources.Collection, ctx: TaskContext) -> None:
        self._items = source.items[ctx.subtask_index :: ctx.parallelism]
        # Index of the next item of our share to emit.
        self.position = 0

    async def read(self, max_records: int) -> list[Any] | None:
        if self.position >= len(self._items):
            return None
        batch = self._items[self.position : self.position + max_records]
        self.position += len(batch)
        return batch


class _GeneratorReader(SourceReader):
    def __init__(self, source: sources.Generator, ctx: TaskContext) -> None:
        self._fn = source.fn
        self._stride = ctx.parallelism
        self._count = source.count
        # The next index to generate (of all subtasks' indices: start + k * stride).
        self.position = ctx.subtask_index
        self._rate = None if source.rate is None else source.rate / ctx.parallelism
        self._clock = ctx.clock
        self._started: float | None = None
        self._emitted = 0

    async def read(self, max_records: int) -> list[Any] | None:
        if self._count is not None and self.position >= self._count:
            return None
        n = max_records
        if self._rate is not None:
            now = self._clock.monotonic_ms()
            if self._started is None:
                self._started = now
            due = int((now - self._started) * self._rate / 1000.0) + 1 - self._emitted
            if due <= 0:
                wait_ms = (self._emitted + 1) * 1000.0 / self._rate - (now - self._started)
                await self._clock.sleep_ms(max(wait_ms, 0.5))
                return []
            n = min(n, due)
        stop = self.position + n * self._stride
        if self._count is not None:
            stop = min(stop, self._count)
        fn = self._fn
        indices = range(self.position, stop, self._stride)
        try:
            batch = [fn(i) for i in indices]
        except UserCodeError as exc:
            index, inner = first_failure(fn, indices) or (indices[0], exc)
            raise RecordError(
                f"Generator function raised {type(inner).__name__}: {inner} — for index {index}"
            ) from inner
        self.position += len(batch) * self._stride
        self._emitted += len(batch)
        return batch


class _FileReader(SourceReader):
    """Reads the byte ranges of our share, line by line, a chunk at a time."""

    def __init__(self, source: sources.TextFile | sources.JsonLines, ctx: TaskContext) -> None:
        self._json = isinstance(source, sources.JsonLines)
        pattern = str(ctx.resolve(source.path))
        paths = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise GraphError(
                f"{type(source).__name__} source: no file matches {source.path!r} "
                f"(relative paths resolve against {ctx.base_dir})"
            )
        files = [(p, os.path.getsize(p)) for p in paths]
        self._ranges = plan_splits(files, ctx.parallelism, ctx.subtask_index)
        # Index in _ranges of the range being read.
        self._range_index = 0
        self._file: Any = None
        self._end = 0  # end of the current range (file offset)
        self._read_pos = 0  # file offset of the first byte of _buffer
        self._buffer = b""  # bytes read but not yet split into lines
        self._lines: list[bytes] = []  # complete lines of our range not yet handed out
        self._line_offset = 0  # file offset of _lines[0]
        self._range_done = False  # every line of the current range is in _lines

    @property
    def position(self) -> tuple[int, int]:
        """(range index, file offset of the next line to hand out)."""
        return self._range_index, self._line_offset

    def _open_current(self) -> bool:
        """Open the range at ``_range_index`` (skipping empty ones); False when none is left."""
        while self._range_index < len(self._ranges):
            rng: FileRange = self._ranges[self._range_index]
            f = open(rng.path, "rb")  # noqa: SIM115 - closed in _close_file
            start = rng.start
            if start > 0:
                f.seek(start - 1)
                if f.read(1) != b"\n":  # we start inside a line: the range before owns it
                    start += len(f.readline())
            if start < rng.end:
                self._file = f
                self._end = rng.end
                self._read_pos = start
                self._line_offset = start
                self._buffer = b""
                self._lines = []
                self._range_done = False
                return True
            f.close()
            self._range_index += 1
        return False

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _fill(self) -> None:
        """Read one chunk; keep the complete lines that start before the range's end."""
        chunk = self._file.read(_CHUNK)
        if not chunk:  # end of file: a last line may lack its newline
            if self._buffer and self._read_pos < self._end:
                self._lines.append(self._buffer)
            self._buffer = b""
            self._range_done = True
            return
        data = self._buffer + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._buffer = data
            return
        complete, rest = data[: cut + 1], data[cut + 1 :]
        lines = complete.split(b"\n")
        lines.pop()  # the empty string after the final newline
        next_start = self._read_pos + len(complete)
        if next_start >= self._end:
            # The range ends inside this chunk: keep lines that start before the end.
            offset, keep = self._read_pos, 0
            for line in lines:
                if offset >= self._end:
                    break
                offset += len(line) + 1
                keep += 1
            del lines[keep:]
            rest = b""
            self._range_done = True
        self._read_pos = next_start
        self._buffer = rest
        self._lines.extend(lines)

    def _decode(self, lines: list[bytes], first_offset: int) -> list[Any]:
        if self._json:
            loads = orjson.loads
            try:
                return [loads(line) for line in lines if line]
            except orjson.JSONDecodeError:
                return self._decode_slow(lines, first_offset)
        try:
            text = b"\n".join(lines).decode("utf-8")
        except UnicodeDecodeError:
            return self._decode_slow(lines, first_offset)
        out = text.split("\n")
        if "\r" in text:
            out = [line.rstrip("\r") for line in out]
        return out

    def _decode_slow(self, lines: list[bytes], offset: int) -> list[Any]:
        path = self._ranges[self._range_index].path
        out = []
        for line in lines:
            try:
                if not self._json:
                    out.append(line.decode("utf-8").rstrip("\r"))
                elif line.strip():
                    out.append(orjson.loads(line))
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                what = "is not valid JSON" if self._json else "is not valid UTF-8"
                raise RecordError(
                    f"{path}: the line at byte offset {offset} {what} ({exc}): {line[:80]!r}"
                ) from None
            offset += len(line) + 1
        return out

    async def read(self, max_records: int) -> list[Any] | None:
        while True:
            if self._file is None and not self._open_current():
                return None
            while len(self._lines) < max_records and not self._range_done:
                self._fill()
            if self._lines:
                break
            self._close_file()
            self._range_index += 1
        lines = self._lines[:max_records]
        del self._lines[:max_records]
        first = self._line_offset
        self._line_offset += sum(map(len, lines)) + len(lines)
        return self._decode(lines, first)

    def close(self) -> None:
        self._close_file()


class _ZmqPullReader(SourceReader):
    """Messages from an outside PUSH socket; waits (without blocking the node) for more."""

    def __init__(self, source: sources.ZmqPull, ctx: TaskContext) -> None:
        if ctx.sockets is None:
            raise GraphError("ZmqPull needs the node's socket factory")
        self._factory = ctx.sockets
        self._endpoint = source.endpoint
        self._sock: Socket | None = None

    def open(self) -> None:
        self._sock = self._factory.connect(SocketKind.PULL, self._endpoint)

    async def read(self, max_records: int) -> list[Any] | None:
        sock = self._sock
        assert sock is not None, "read before open"
        out: list[Any] = []
        while len(out) < max_records:
            frames = sock.recv_nowait()
            if frames is None:
                if out:
                    break
                await sock.wait_readable()
                continue
            try:
                out.append(orjson.loads(frames[-1]))
            except orjson.JSONDecodeError as exc:
                raise RecordError(
                    f"ZmqPull {self._endpoint}: a message is not JSON ({exc}): {frames[-1][:80]!r}"
                ) from None
        return out

    def close(self) -> None:
        if self._sock is not None:
            self._factory.release(self._sock)
            self._sock = None


def build_reader(source: sources.Source, ctx: TaskContext) -> SourceReader:
    """The reader for ``source`` in the subtask described by ``ctx``."""
    factories: dict[type[Any], Callable[[Any, TaskContext], SourceReader]] = {
        sources.Collection: _CollectionReader,
        sources.Generator: _GeneratorReader,
        sources.TextFile: _FileReader,
        sources.JsonLines: _FileReader,
        sources.ZmqPull: _ZmqPullReader,
    }
    factory = factories.get(type(source))
    if factory is None:
        raise GraphError(f"source {type(source).__name__} is not supported by this node")
    return factory(source, ctx)
