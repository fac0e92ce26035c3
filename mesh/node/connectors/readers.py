"""Source readers: the runtime side of ``mesh.sources``, reading checkpointable splits.

A source's input is cut into *splits* when the job first starts: ``parallelism``
arithmetic sequences of indices for ``Collection`` and ``Generator`` (subtask k of p
makes i = k, k+p, ...), byte ranges of the files for ``TextFile``/``JsonLines``. Each
subtask reads the splits it owns and records, per split, where it is (the next index,
the byte offset of the next line). At a checkpoint those positions are the source's
state; restored at another parallelism, the splits are dealt out again (a subtask may
read several, or none), so every record is read exactly once across restarts — and a
key whose records all come from one split keeps its order.

The readers implement ``mesh.connectors.SourceReader``. A reader hands out batches
(``read``) until its splits are done (``None``); it returns
``[]`` promptly when nothing is ready, so its subtask can handle checkpoints.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from mesh.api import sources
from mesh.connectors.base import RestoredSplits, SourceReader, Split
from mesh.errors import GraphError, RecordError, UndecodableInput
from mesh.node.connectors.splits import plan_splits
from mesh.node.operators.context import TaskContext
from mesh.node.operators.records import UserCodeError, first_failure
from mesh.transport.sockets import Socket, SocketKind

__all__ = ["SourceReader", "builtin_reader"]

_CHUNK = 1 << 20
# The longest a reader of a live source waits for input before it returns [].
_IDLE_WAIT_S = 0.05


class _StrideReader(SourceReader):
    """Indices start, start+stride, ... per split; ``make(i)`` turns an index into a record."""

    def __init__(self, ctx: TaskContext, count: int | None, rate: float | None) -> None:
        self._ctx = ctx
        self._count = count
        self._rate_total = rate
        self._clock = ctx.clock
        self._splits: list[Split] = []
        self._turn = 0  # which split reads next (round-robin)
        self._rate: float | None = None
        self._started: float | None = None
        self._emitted = 0

    def make(self, indices: range) -> list[Any]:
        raise NotImplementedError

    def plan(self) -> list[Split]:
        k, p = self._ctx.subtask_index, self._ctx.parallelism
        return [{"start": k, "stride": p, "next": k}]

    def initialize(self, restored: RestoredSplits | None) -> None:
        splits = self.plan() if restored is None else restored.mine
        self._splits = [dict(s) for s in splits]
        if self._rate_total is not None and self._splits:
            # Each split carries 1/stride of the total rate.
            self._rate = self._rate_total * len(self._splits) / self._splits[0]["stride"]

    def snapshot(self, checkpoint_id: int) -> list[Split]:
        return [dict(s) for s in self._splits]

    def progress(self) -> tuple[int, int] | None:
        count = self._count
        if count is None:
            return None
        done = total = 0
        for split in self._splits:
            start, stride = split["start"], split["stride"]
            total += len(range(start, count, stride))
            done += len(range(start, min(split["next"], count), stride))
        return done, total

    def _live(self) -> list[Split]:
        count = self._count
        return [s for s in self._splits if count is None or s["next"] < count]

    async def read(self, max_records: int) -> list[Any] | None:
        live = self._live()
        if not live:
            return None
        n = max_records
        if self._rate is not None:
            now = self._clock.monotonic_ms()
            if self._started is None:
                self._started = now
            due = int((now - self._started) * self._rate / 1000.0) + 1 - self._emitted
            if due <= 0:
                wait_ms = (self._emitted + 1) * 1000.0 / self._rate - (now - self._started)
                await self._clock.sleep_ms(min(max(wait_ms, 0.5), _IDLE_WAIT_S * 1000))
                return []
            n = min(n, due)
        split = live[self._turn % len(live)]
        self._turn += 1
        stride = split["stride"]
        stop = split["next"] + n * stride
        if self._count is not None:
            stop = min(stop, self._count)
        indices = range(split["next"], stop, stride)
        batch = self.make(indices)
        split["next"] += len(indices) * stride
        self._emitted += len(batch)
        return batch


class _CollectionReader(_StrideReader):
    def __init__(self, source: sources.Collection, ctx: TaskContext) -> None:
        super().__init__(ctx, len(source.items), None)
        self._items = source.items

    def make(self, indices: range) -> list[Any]:
        return self._items[indices.start : indices.stop : indices.step]


class _GeneratorReader(_StrideReader):
    def __init__(self, source: sources.Generator, ctx: TaskContext) -> None:
        super().__init__(ctx, source.count, source.rate)
        self._fn = source.fn

    def make(self, indices: range) -> list[Any]:
        fn = self._fn
        try:
            return [fn(i) for i in indices]
        except UserCodeError as exc:
            index, inner = first_failure(fn, indices) or (indices[0], exc)
            raise RecordError(
                f"Generator function raised {type(inner).__name__}: {inner} — for index {index}"
            ) from inner


class _FileReader(SourceReader):
    """Reads its byte-range splits one after another, line by line, a chunk at a time.

    A split is ``{"path", "start", "end", "offset", "aligned"}``: ``offset`` is where the
    next line to hand out starts; ``aligned`` is false until the first line boundary
    after ``start`` was found (a split that starts inside a line leaves that line to the
    split before it).
    """

    def __init__(self, source: sources.TextFile | sources.JsonLines, ctx: TaskContext) -> None:
        self._json = isinstance(source, sources.JsonLines)
        self._source = source
        self._ctx = ctx
        self._splits: list[Split] = []
        self._index = 0  # the split being read
        self._file: Any = None
        self._read_pos = 0  # file offset of the first byte of _buffer
        self._buffer = b""  # bytes read but not yet split into lines
        self._lines: list[bytes] = []  # complete lines of the split not yet handed out
        self._split_done = False  # every line of the current split is in _lines

    def plan(self) -> list[Split]:
        pattern = str(self._ctx.resolve(self._source.path))
        found = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        paths = [p for p in found if os.path.isfile(p)]
        if not paths:
            raise GraphError(
                f"{type(self._source).__name__} source: no file matches {self._source.path!r} "
                f"(relative paths resolve against {self._ctx.base_dir})"
            )
        files = [(p, os.path.getsize(p)) for p in paths]
        ranges = plan_splits(files, self._ctx.parallelism, self._ctx.subtask_index)
        return [
            {"path": r.path, "start": r.start, "end": r.end, "offset": r.start, "aligned": False}
            for r in ranges
        ]

    def initialize(self, restored: RestoredSplits | None) -> None:
        self._splits = [dict(s) for s in (self.plan() if restored is None else restored.mine)]

    def snapshot(self, checkpoint_id: int) -> list[Split]:
        return [dict(s) for s in self._splits]

    def progress(self) -> tuple[int, int] | None:
        done = sum(max(0, min(s["offset"], s["end"]) - s["start"]) for s in self._splits)
        return done, sum(s["end"] - s["start"] for s in self._splits)

    @property
    def position(self) -> tuple[int, int]:
        """(split index, file offset of the next line to hand out)."""
        if self._index >= len(self._splits):
            return self._index, 0
        return self._index, self._splits[self._index]["offset"]

    def _open_current(self) -> bool:
        """Open the split at ``_index`` (skipping finished ones); False when none is left."""
        while self._index < len(self._splits):
            split = self._splits[self._index]
            try:
                f = open(split["path"], "rb")  # noqa: SIM115 - closed in _close_file
            except OSError as exc:
                raise RecordError(f"cannot read {split['path']}: {exc}") from None
            offset = split["offset"]
            if not split["aligned"]:
                if offset > 0:
                    f.seek(offset - 1)
                    if f.read(1) != b"\n":  # inside a line: the split before owns it
                        offset += len(f.readline())
                split["offset"], split["aligned"] = offset, True
            else:
                f.seek(offset)
            if offset < split["end"]:
                self._file = f
                self._read_pos = offset
                self._buffer = b""
                self._lines = []
                self._split_done = False
                return True
            f.close()
            self._index += 1
        return False

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _fill(self) -> None:
        """Read one chunk; keep the complete lines that start before the split's end."""
        end = self._splits[self._index]["end"]
        chunk = self._file.read(_CHUNK)
        if not chunk:  # end of file: a last line may lack its newline
            if self._buffer and self._read_pos < end:
                self._lines.append(self._buffer)
            self._buffer = b""
            self._split_done = True
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
        if next_start >= end:
            # The split ends inside this chunk: keep lines that start before the end.
            offset, keep = self._read_pos, 0
            for line in lines:
                if offset >= end:
                    break
                offset += len(line) + 1
                keep += 1
            del lines[keep:]
            rest = b""
            self._split_done = True
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
        path = self._splits[self._index]["path"]
        out = []
        for line in lines:
            try:
                if not self._json:
                    out.append(line.decode("utf-8").rstrip("\r"))
                elif line.strip():
                    out.append(orjson.loads(line))
            except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
                what = "is not valid JSON" if self._json else "is not valid UTF-8"
                self.reject(
                    UndecodableInput(
                        f"{path}: the line at byte offset {offset} {what} ({exc}): {line[:80]!r}",
                        raw=line.decode("utf-8", "replace"),
                        origin={"file": str(path), "offset": offset},
                    )
                )
            offset += len(line) + 1
        return out

    async def read(self, max_records: int) -> list[Any] | None:
        while True:
            if self._file is None and not self._open_current():
                return None
            while len(self._lines) < max_records and not self._split_done:
                self._fill()
            if self._lines:
                break
            self._close_file()
            split = self._splits[self._index]
            split["offset"] = split["end"]
            self._index += 1
        lines = self._lines[:max_records]
        del self._lines[:max_records]
        split = self._splits[self._index]
        first = split["offset"]
        split["offset"] = first + sum(map(len, lines)) + len(lines)
        return self._decode(lines, first)

    def close(self) -> None:
        self._close_file()


class _ZmqPullReader(SourceReader):
    """Messages from an outside PUSH socket (not replayable: no position to keep)."""

    def __init__(self, source: sources.ZmqPull, ctx: TaskContext) -> None:
        if ctx.sockets is None:
            raise GraphError("ZmqPull needs the node's socket factory")
        self._factory = ctx.sockets
        self._endpoint = source.endpoint
        self._sock: Socket | None = None

    async def open(self) -> None:
        self._sock = self._factory.connect(SocketKind.PULL, self._endpoint, outside=True)

    async def read(self, max_records: int) -> list[Any] | None:
        sock = self._sock
        assert sock is not None, "read before open"
        out: list[Any] = []
        while len(out) < max_records:
            frames = sock.recv_nowait()
            if frames is None:
                if out:
                    break
                # Come back empty-handed now and then so the subtask can take checkpoints.
                with anyio.move_on_after(_IDLE_WAIT_S):
                    await sock.wait_readable()
                frames = sock.recv_nowait()
                if frames is None:
                    return out
            try:
                out.append(orjson.loads(frames[-1]))
            except orjson.JSONDecodeError as exc:
                self.reject(
                    UndecodableInput(
                        f"ZmqPull {self._endpoint}: a message is not JSON ({exc}): "
                        f"{frames[-1][:80]!r}",
                        raw=frames[-1].decode("utf-8", "replace"),
                        origin={"endpoint": self._endpoint},
                    )
                )
        return out

    def close(self) -> None:
        if self._sock is not None:
            self._factory.release(self._sock)
            self._sock = None


def builtin_reader(source: sources.Source, ctx: TaskContext) -> SourceReader | None:
    """The reader of a built-in ``source`` in the subtask described by ``ctx`` (None for
    any other source: it makes its own)."""
    factories: dict[type[Any], Callable[[Any, TaskContext], SourceReader]] = {
        sources.Collection: _CollectionReader,
        sources.Generator: _GeneratorReader,
        sources.TextFile: _FileReader,
        sources.JsonLines: _FileReader,
        sources.ZmqPull: _ZmqPullReader,
    }
    factory = factories.get(type(source))
    return factory(source, ctx) if factory is not None else None
