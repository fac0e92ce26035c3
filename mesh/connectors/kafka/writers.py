"""The writers of ``sinks.Kafka`` (``sink.py``): at-least-once produces at once and waits
for acknowledgements at barriers; exactly-once buffers a checkpoint's records for the
committer (``committer.py``)."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from mesh.connectors.base import SinkWriter
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.blocking import discard
from mesh.connectors.kafka.settings import client_config
from mesh.connectors.kafka.sink import (
    PRODUCER,
    Kafka,
    sink_name,
    transactional_id,
)
from mesh.errors import ConnectorError, EncodingError, RecordError

log = logging.getLogger("mesh.connectors.kafka")

# How long flush/commit steps wait for the brokers before they check again.
_WAIT_S = 1.0

__all__ = ["BufferingWriter", "KafkaWriter", "ProducingWriter"]


class _Encoder:
    """Turns a record into (key bytes or None, value bytes)."""

    def __init__(self, sink: Kafka, name: str) -> None:
        self._name = name
        self._format = sink.value_format
        key = sink.key
        self._key: Callable[[Any], Any] | None
        if isinstance(key, str):
            field = key
            self._key = lambda record: record[field]
        else:
            self._key = key

    def value(self, record: Any) -> bytes:
        fmt = self._format
        try:
            if fmt == "json":
                return orjson.dumps(record)
            if fmt == "text":
                if not isinstance(record, str):
                    raise TypeError("value_format 'text' takes str records")
                return record.encode("utf-8")
            if not isinstance(record, bytes | bytearray | memoryview):
                raise TypeError("value_format 'bytes' takes bytes records")
            return bytes(record)
        except (TypeError, UnicodeEncodeError, orjson.JSONEncodeError) as exc:
            raise EncodingError(
                f"{self._name}: cannot make a {fmt} value of a {type(record).__name__} "
                f"record: {exc}"
            ) from None

    def key(self, record: Any) -> bytes | None:
        make = self._key
        if make is None:
            return None
        try:
            key = make(record)
        except Exception as exc:
            raise RecordError(
                f"{self._name}: cannot take the key of a {type(record).__name__} record: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if key is None:
            return None
        if isinstance(key, str):
            return key.encode("utf-8", "surrogatepass")
        if isinstance(key, bytes):
            return key
        try:
            return orjson.dumps(key)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise EncodingError(
                f"{self._name}: cannot make a key of {type(key).__name__} (of a "
                f"{type(record).__name__} record): {exc}"
            ) from None


class KafkaWriter(SinkWriter):
    """Base of the two writers."""

    def __init__(self, sink: Kafka, ctx: TaskContext) -> None:
        self._sink = sink
        self._ctx = ctx
        self._name = sink_name(sink, ctx)
        self._encoder = _Encoder(sink, self._name)


class ProducingWriter(KafkaWriter):
    """at_least_once: produce at once (idempotent producer), wait for acks at barriers."""

    backpressured = True

    def __init__(self, sink: Kafka, ctx: TaskContext) -> None:
        super().__init__(sink, ctx)
        self._producer: Any = None
        self._rest: list[tuple[bytes | None, bytes]] = []  # not taken by a full queue
        self._failures: list[Any] = []
        self._failed = 0

    async def open(self) -> None:
        from confluent_kafka import Producer

        sink, ctx = self._sink, self._ctx
        ours = {**PRODUCER, "delivery.report.only.error": True, "on_delivery": self._delivered}
        client_id = f"mesh-{ctx.job_id}-{ctx.operator_uid}-{ctx.subtask_index}"
        config = client_config(sink.bootstrap, client_id, ours, sink.config or {})
        self._producer = await anyio.to_thread.run_sync(Producer, config)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failed += 1
            if len(self._failures) < 5:
                self._failures.append(error)

    def write(self, records: list[Any]) -> None:
        producer = self._producer
        assert producer is not None, "write before open"
        topic = self._sink.topic
        value, key = self._encoder.value, self._encoder.key
        produce = producer.produce
        encoded = [(key(r), value(r)) for r in records]
        if self._rest:
            self._rest.extend(encoded)
            return
        for i, (k, v) in enumerate(encoded):
            try:
                produce(topic, v, k)
            except BufferError:  # the local queue is full: wait_writable sends the rest
                self._rest = encoded[i:]
                break
        producer.poll(0)

    async def wait_writable(self) -> None:
        if self._rest:
            await anyio.to_thread.run_sync(self._produce_rest)

    def _produce_rest(self) -> None:
        producer, topic = self._producer, self._sink.topic
        rest, self._rest = self._rest, []
        i = 0
        while i < len(rest):
            k, v = rest[i]
            try:
                producer.produce(topic, v, k)
                i += 1
            except BufferError:
                producer.poll(0.05)  # delivers reports, making room
        producer.poll(0)

    async def flush(self) -> None:
        await self.wait_writable()
        await anyio.to_thread.run_sync(self._flush_blocking)

    def _flush_blocking(self) -> None:
        producer = self._producer
        while producer.flush(_WAIT_S) > 0:
            pass
        if self._failures:
            first, count = self._failures[0], self._failed
            self._failures, self._failed = [], 0
            raise ConnectorError(
                f"{self._name}: {count} records could not be written to {self._sink.bootstrap!r}; "
                f"the first error: {first.str()}"
            )

    def abort(self) -> None:
        self._rest = []

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            discard(producer)  # what is not flushed is written again after a restore


class BufferingWriter(KafkaWriter):
    """exactly_once: keep what comes in memory; each barrier seals it as a committable.

    JSON values with text keys (the usual case) are kept as JSON lines, one string per
    batch, and the committable holds them as one string of lines (and the keys as
    another): encoding a checkpoint's output for the snapshot, and splitting it again
    to commit, is then a few calls in C rather than work per record. Anything else
    (text or bytes values, a key that is not text or holds a newline) switches the
    buffer to a list of ``[key, value]`` pairs, base64 where binary.
    """

    def __init__(self, sink: Kafka, ctx: TaskContext) -> None:
        super().__init__(sink, ctx)
        self._owner = transactional_id(ctx)
        self._binary_values = sink.value_format == "bytes"
        self._lines_ok = sink.value_format == "json"
        self._keyed = sink.key is not None
        self._reset()

    def _reset(self) -> None:
        self._binary_keys = self._binary_values
        self._lines = self._lines_ok
        self._chunks: list[bytes] = []  # JSON lines, newline-terminated (lines mode)
        self._keys: list[str] = []  # one per record (lines mode, keyed sinks)
        self._count = 0
        # [key, value] as text (UTF-8) or base64 text (binary)
        self._records: list[list[str | None]] = []

    def write(self, records: list[Any]) -> None:
        if self._lines:
            keys = self._text_keys(records) if self._keyed else []
            if keys is not None:
                self._chunks.append(self._json_lines(records))
                self._keys.extend(keys)
                self._count += len(records)
                return
            self._to_records()
        self._write_records(records)

    def _json_lines(self, records: list[Any]) -> bytes:
        out = io.BytesIO()
        write, dumps = out.write, orjson.dumps
        try:
            for record in records:
                write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        except TypeError:
            for record in records:  # find the record at fault, and say which
                self._encoder.value(record)
            raise
        return out.getvalue()

    def _text_keys(self, records: list[Any]) -> list[str] | None:
        """Each record's key as text, or None when one is not (the buffer then keeps
        pairs)."""
        out = []
        key = self._encoder.key
        for record in records:
            k = key(record)
            if k is None or b"\n" in k:
                return None
            try:
                out.append(k.decode("utf-8"))
            except UnicodeDecodeError:
                return None
        return out

    def _to_records(self) -> None:
        """Switch the buffer from lines to pairs."""
        values = b"".join(self._chunks).decode("utf-8").split("\n")[:-1]
        keys: list[str | None] = list(self._keys) if self._keyed else [None] * len(values)
        self._records = [[k, v] for k, v in zip(keys, values, strict=True)]
        self._chunks, self._keys, self._count, self._lines = [], [], 0, False

    def _write_records(self, records: list[Any]) -> None:
        value, key = self._encoder.value, self._encoder.key
        out = self._records
        for record in records:
            k = key(record)
            v = value(record)
            # Text: the bytes orjson made are freed (each holds ~4 KiB of memory).
            vt = base64.b64encode(v).decode("ascii") if self._binary_values else v.decode()
            kt: str | None = None
            if k is not None:
                if self._binary_keys:
                    kt = base64.b64encode(k).decode("ascii")
                else:
                    try:
                        kt = k.decode("utf-8")
                    except UnicodeDecodeError:
                        self._switch_keys_to_base64()
                        kt = base64.b64encode(k).decode("ascii")
            out.append([kt, vt])

    def _switch_keys_to_base64(self) -> None:
        self._binary_keys = True
        for pair in self._records:
            if pair[0] is not None:
                pair[0] = base64.b64encode(pair[0].encode("utf-8", "surrogatepass")).decode("ascii")

    def prepare_commit(self, transaction: str) -> dict[str, Any] | None:
        committable: dict[str, Any]
        if self._count:
            lines = b"".join(self._chunks).decode("utf-8")
            committable = {
                "owner": self._owner,
                "topic": self._sink.topic,
                "count": self._count,
                "value_lines": lines[:-1],  # without the last newline
                "key_lines": "\n".join(self._keys) if self._keyed else None,
            }
        elif self._records:
            committable = {
                "owner": self._owner,
                "topic": self._sink.topic,
                "keys": "base64" if self._binary_keys else "text",
                "values": "base64" if self._binary_values else "text",
                "records": self._records,
            }
        else:
            return None
        self._reset()
        return committable

    def abort(self) -> None:
        self._reset()
