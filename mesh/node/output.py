"""Writing a chain's output to the channels of one job edge.

``EdgeWriter`` partitions each batch over the edge's channels into per-channel record
buffers and hands a buffer to its channel (encoded as one JSON array) when it holds
``buffer_records`` records, when the subtask's flusher runs (every ``buffer_timeout``),
or right before an event. Partitioning works on whole batches: forward and broadcast
extend buffers, rebalance deals records round-robin with slices, hash looks up the key
group owner with a memo per key.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from mesh.errors import RecordError
from mesh.graph.keygroups import KeyGroupRouter
from mesh.graph.logical import OperatorSpec, Partitioning
from mesh.node.channels import OutputChannel
from mesh.node.operators import UserCodeError, describe_record, first_failure
from mesh.node.writers import encode_batch
from mesh.transport.frames import FrameKind

__all__ = ["EdgeWriter"]


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

    def write(self, batch: list[Any]) -> None:
        """Partition ``batch`` into the channel buffers; send the buffers that are full."""
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
            # Name the record at fault (the subtask fails; records placed so far are moot).
            record, inner = first_failure(lambda r: owner(key_fn(r)), batch) or (None, exc)
            raise RecordError(
                f"key_by function for operator {self.consumer.uid!r} ({self.consumer.name}) "
                f"raised {type(inner).__name__}: {inner} — on record {describe_record(record)}"
            ) from inner

    def _send(self, index: int) -> None:
        buf = self._buffers[index]
        self._buffers[index] = []
        self.channels[index].send_data(encode_batch(self.producer, buf))

    def flush(self) -> None:
        """Send every non-empty buffer (buffer timeout, or before an event)."""
        for index, buf in enumerate(self._buffers):
            if buf:
                self._send(index)

    def emit_event(self, kind: FrameKind, arg: int = 0, payload: bytes = b"") -> None:
        """Send an event on every channel, after the records written before it."""
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
