"""Writing a chain's output to the channels of one job edge.

``EdgeWriter`` partitions each batch over the edge's channels into per-channel record
buffers and hands a buffer to its channel (encoded as one JSON array) when it holds
``buffer_records`` records, when the subtask's flusher runs (every ``buffer_timeout``),
or right before an event. Partitioning works on whole batches: forward and broadcast
extend buffers, rebalance deals records round-robin with slices, hash looks up the key
group owner with a memo per key.

On an edge whose records carry event time (``timed``) each buffer has a parallel list of
timestamps, partitioned along with the records and sent with them as
``{"t": [timestamps], "r": [records]}``.

While ``tracing`` holds a sampled record's trace context, what is written is marked in
the buffers it lands in (record indexes ``[start, end)``), and those buffers go out as
``TracedPayload``s that carry the marks to the consumer.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

from mesh.errors import RecordError
from mesh.graph.keygroups import KeyGroupRouter
from mesh.graph.logical import OperatorSpec, Partitioning
from mesh.node.dataplane.channels import OutputChannel
from mesh.node.operators.combine import Combiner
from mesh.node.operators.records import (
    UserCodeError,
    describe_record,
    encode_batch,
    first_failure,
)
from mesh.time.watermarks import NO_TIMESTAMP
from mesh.transport.frames import FrameKind
from mesh.transport.traced import MAX_TRACE_MARKS, TracedPayload, TraceMark

__all__ = ["EdgeWriter"]


# A combining edge sends its partials early once it holds this many keys.
_COMBINED_KEYS = 100_000


def _first(pair: list[Any]) -> Any:
    return pair[0]


class EdgeWriter:
    """The output of one subtask into one job edge."""

    def __init__(
        self,
        *,
        producer: OperatorSpec,
        consumer: OperatorSpec,
        partitioning: Partitioning,
        channels: list[OutputChannel],
        subtask_index: int,
        buffer_records: int,
        key_fn: Callable[[Any], Any] | None = None,
        lenient_keys: bool = False,
        timed: bool = False,
        combiner: Combiner | None = None,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.partitioning = partitioning
        self.channels = channels
        self.buffer_records = buffer_records
        # Records waiting per channel (index = position in ``channels``).
        self._buffers: list[list[Any]] = [[] for _ in channels]
        # Next channel for round-robin partitionings; staggered so producers spread out.
        self._next = subtask_index % len(channels)
        self._key_fn = key_fn
        self._lenient_keys = lenient_keys  # see _write_hashed
        self._router = (
            KeyGroupRouter(len(channels), consumer.max_parallelism)
            if partitioning is Partitioning.HASH
            else None
        )
        self._random = random.Random(subtask_index)
        # Timestamps per channel, parallel to ``_buffers`` (timed edges only).
        self.timed = timed
        self._stamps: list[list[int]] = [[] for _ in channels] if timed else []
        # The trace context of the sampled records being written now (None: untraced).
        self.tracing: dict[str, str] | None = None
        # Trace marks per channel buffer (allocated with the first sampled record).
        self._marks: list[list[TraceMark]] | None = None
        # Batch mode: records are folded into partials here, sent at the end of input.
        self._combiner = combiner

    def write(self, batch: list[Any], stamps: list[int] | None = None) -> None:
        """Partition ``batch`` (with its ``stamps``, on a timed edge) into the channel
        buffers; send the buffers that are full."""
        combiner = self._combiner
        if combiner is not None:
            combiner.add(batch)
            if combiner.size > _COMBINED_KEYS:  # merging is associative: send some now
                self._send_partials()
            return
        if self.tracing is not None:
            self._write_traced(self.tracing, batch, stamps)
            return
        if self.timed:
            self._write_timed(batch, stamps if stamps is not None else [NO_TIMESTAMP] * len(batch))
            return
        buffers = self._buffers
        n = len(buffers)
        part = self.partitioning
        if n == 1:
            buffers[0].extend(batch)
        elif part is Partitioning.HASH:
            self._write_hashed(batch)
        elif part is Partitioning.BROADCAST:
            for buf in buffers:
                buf.extend(batch)
        elif part is Partitioning.SHUFFLE:
            pick = self._random.randrange
            for record in batch:
                buffers[pick(n)].append(record)
        else:  # rebalance, rescale: round-robin, one slice per channel
            start = self._next
            for k in range(min(n, len(batch))):
                buffers[(start + k) % n].extend(batch[k::n])
            self._next = (start + len(batch)) % n
        limit = self.buffer_records
        for index, buf in enumerate(buffers):
            if len(buf) >= limit:
                self._send(index)

    def _write_traced(
        self, context: dict[str, str], batch: list[Any], stamps: list[int] | None
    ) -> None:
        """``write``, marking the records in each buffer they land in with ``context``
        before any full buffer goes out."""
        buffers = self._buffers
        before = [len(buf) for buf in buffers]
        limit = self.buffer_records
        self.tracing, self.buffer_records = None, sys.maxsize  # partition only
        try:
            self.write(batch, stamps)
        finally:
            self.tracing, self.buffer_records = context, limit
        if self._marks is None:
            self._marks = [[] for _ in buffers]
        for index, buf in enumerate(buffers):
            marks = self._marks[index]
            if len(buf) > before[index] and len(marks) < MAX_TRACE_MARKS:
                marks.append((context, before[index], len(buf)))
        for index, buf in enumerate(buffers):
            if len(buf) >= limit:
                self._send(index)

    def _write_timed(self, batch: list[Any], stamps: list[int]) -> None:
        buffers, times = self._buffers, self._stamps
        n = len(buffers)
        part = self.partitioning
        if n == 1:
            buffers[0].extend(batch)
            times[0].extend(stamps)
        elif part is Partitioning.BROADCAST:
            for buf, ts in zip(buffers, times, strict=True):
                buf.extend(batch)
                ts.extend(stamps)
        elif part in (Partitioning.HASH, Partitioning.SHUFFLE):
            for record, stamp, target in zip(batch, stamps, self._targets(batch), strict=True):
                buffers[target].append(record)
                times[target].append(stamp)
        else:  # rebalance, rescale
            start = self._next
            for k in range(min(n, len(batch))):
                buffers[(start + k) % n].extend(batch[k::n])
                times[(start + k) % n].extend(stamps[k::n])
            self._next = (start + len(batch)) % n
        limit = self.buffer_records
        for index, buf in enumerate(buffers):
            if len(buf) >= limit:
                self._send(index)

    def _targets(self, batch: list[Any]) -> list[int]:
        """The channel of each record (hash or shuffle partitioning)."""
        if self.partitioning is Partitioning.SHUFFLE:
            pick, n = self._random.randrange, len(self._buffers)
            return [pick(n) for _ in batch]
        assert self._router is not None and self._key_fn is not None
        owner = self._router.subtask_for
        key_fn = self._key_fn
        try:
            return self._router.subtasks_for([key_fn(record) for record in batch])
        except UserCodeError as exc:
            if not self._lenient_keys:
                raise self._key_error(batch, exc) from exc
        targets = []
        for record in batch:
            try:
                targets.append(owner(key_fn(record)))
            except UserCodeError:
                targets.append(0)  # lenient keys: see _write_hashed
        return targets

    def _write_hashed(self, batch: list[Any]) -> None:
        assert self._router is not None and self._key_fn is not None
        buffers = self._buffers
        owner = self._router.subtask_for
        key_fn = self._key_fn
        before = sum(map(len, buffers))
        try:
            for record in batch:
                buffers[owner(key_fn(record))].append(record)
        except UserCodeError as exc:
            if self._lenient_keys:
                # on_error="dead_letter": a record whose key cannot be computed goes to the
                # first channel; the keyed operator fails on it again and sets it aside.
                for record in batch[sum(map(len, buffers)) - before :]:
                    try:
                        target = owner(key_fn(record))
                    except UserCodeError:
                        target = 0
                    buffers[target].append(record)
                return
            # The subtask fails; records placed so far are moot.
            raise self._key_error(batch, exc) from exc

    def _key_error(self, batch: list[Any], exc: BaseException) -> RecordError:
        """A key_by failure naming the record at fault."""
        assert self._router is not None and self._key_fn is not None
        owner = self._router.subtask_for
        key_fn = self._key_fn
        record, inner = first_failure(lambda r: owner(key_fn(r)), batch) or (None, exc)
        error = RecordError(
            f"key_by function for operator {self.consumer.uid!r} ({self.consumer.name}) "
            f"raised {type(inner).__name__}: {inner} — on record {describe_record(record)}"
        )
        error.__cause__ = inner
        return error

    def _send(self, index: int) -> None:
        buf = self._buffers[index]
        self._buffers[index] = []
        if self.timed:
            stamps = self._stamps[index]
            self._stamps[index] = []
            payload = encode_batch(self.producer, buf, stamps)
        else:
            payload = encode_batch(self.producer, buf)
        marks = self._marks
        if marks is not None and marks[index]:
            payload = TracedPayload.of(payload, marks[index])
            marks[index] = []
        self.channels[index].send_data(payload)

    def end_of_input(self) -> None:
        """The producer's input ended: a combining edge sends its ``[key, partial]``
        pairs now, partitioned by their key."""
        self._send_partials()
        self._combiner = None

    def _send_partials(self) -> None:
        """Write a combining edge's ``[key, partial]`` pairs, partitioned by their key,
        in buffers of at most ``buffer_records``."""
        combiner = self._combiner
        if combiner is None:
            return
        pairs = combiner.partials()
        self._combiner, key_fn, self._key_fn = None, self._key_fn, _first
        try:
            limit = self.buffer_records
            for start in range(0, len(pairs), limit):
                self.write(pairs[start : start + limit])
        finally:
            self._combiner, self._key_fn = combiner, key_fn

    def flush(self) -> None:
        """Send every non-empty buffer (buffer timeout, or before an event)."""
        for index, buf in enumerate(self._buffers):
            if buf:
                self._send(index)

    def emit_event(self, kind: FrameKind, arg: int = 0, payload: bytes = b"") -> None:
        """Send an event on every channel, after the records written before it (a
        combining edge sends its partials before a barrier: they are part of what the
        checkpoint covers, and the consumer's snapshot must hold them)."""
        if kind is FrameKind.BARRIER:
            self._send_partials()
        self.flush()
        for channel in self.channels:
            channel.send_event(kind, arg, payload)

    def max_backlog(self) -> int:
        """The longest queue of buffers waiting for credit on any channel."""
        return max(channel.backlog for channel in self.channels)

    async def wait_backlog_below(self, limit: int) -> None:
        """Return once every channel has fewer than ``limit`` buffers waiting for credit."""
        for channel in self.channels:
            await channel.wait_backlog_below(limit)
