"""``sinks.Kafka``: records written to a Kafka topic.

**at_least_once**: an idempotent producer writes records as they come; at every
checkpoint barrier (``flush``) the writer waits until the brokers acknowledged all of
them. After a failure, records since the last checkpoint are written again.

**exactly_once** (the default): neither Kafka client for Python can resume a
transaction another process left open, so the writer does not write while records come:
it keeps them (encoded) in memory, and at checkpoint ``n``'s barrier seals them into a
committable that becomes part of checkpoint ``n``. When ``n`` completes, the committer
writes the committable in one transaction under the writer's stable transactional id,
together with a *marker*: offset ``n`` committed for consumer group
``<transactional id>-commits`` on partition 0 of the topic. Records and marker become
visible atomically, so a commit that is retried (after a failure, by a new attempt)
reads the marker first and skips what is already in Kafka; ``init_transactions`` on the
same transactional id fences a zombie writer and aborts what it left open. Readers
must read ``read_committed`` to see only committed records. The cost: output is kept
in the checkpoint, and becomes visible one write after the checkpoint completes.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import anyio
import orjson

from mesh.connectors.base import Committer, Sink, SinkWriter
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.settings import (
    METADATA_TIMEOUT_S,
    check_bootstrap,
    check_config,
    check_format,
    check_positive_int,
    client_config,
    require_client,
    retrying,
)
from mesh.errors import ConnectorError, EncodingError, RecordError, StateError

__all__ = ["END_CHECKPOINT", "Kafka", "KafkaCommitter", "KafkaWriter", "transactional_id"]

log = logging.getLogger("mesh.connectors.kafka")

_SEMANTICS = ("exactly_once", "at_least_once")
#: The marker of the final commit of a bounded job (checkpoint "end"): above every id.
END_CHECKPOINT = 2**62
# How long flush/commit steps wait for the brokers before they check again.
_WAIT_S = 1.0
_PRODUCER = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 1_000_000,
    # Java's partitioner: a key lands on the partition a Java producer puts it on.
    "partitioner": "murmur2_random",
}


def transactional_id(ctx: TaskContext) -> str:
    """The writer's transactional id: stable across attempts, so a new attempt fences
    the previous one's zombie."""
    return f"mesh-{ctx.job_id}-{ctx.operator_uid}-{ctx.subtask_index}"


@dataclass(eq=False)
class Kafka(Sink):
    """Writes records to Kafka ``topic``.

    - ``key``: None (no key: the producer spreads records over the partitions), a field
      name (``record[key]``), or a function ``record -> key``. A ``str`` key is sent as
      UTF-8, ``bytes`` as they are, None as no key, anything else as JSON.
    - ``value_format``: ``"json"`` (the record as JSON), ``"text"`` (a ``str`` record, as
      UTF-8) or ``"bytes"`` (a ``bytes`` record, as it is).
    - ``semantic``: ``"exactly_once"`` (written in a transaction when each checkpoint
      completes; read the topic ``read_committed``) or ``"at_least_once"`` (written at
      once; a failure may write records again).
    - ``transaction_timeout_ms``: how long one commit's transaction may take (exactly
      once; at most the brokers' ``transaction.max.timeout.ms``).
    - ``config``: extra librdkafka producer settings, which win over mesh's.
    """

    topic: str
    _: KW_ONLY
    bootstrap: str
    key: str | Callable[[Any], Any] | None = None
    semantic: str = "exactly_once"
    value_format: str = "json"
    transaction_timeout_ms: int = 60_000
    config: dict[str, str] | None = None

    def __post_init__(self) -> None:
        name = "sinks.Kafka"
        require_client(name)
        if not isinstance(self.topic, str) or not self.topic:
            raise TypeError(f"{name} expects a topic name, got {self.topic!r}")
        self.bootstrap = check_bootstrap(name, self.bootstrap)
        if self.key is not None and not (
            (isinstance(self.key, str) and self.key) or callable(self.key)
        ):
            raise TypeError(
                f"{name} key must be None, a field name or a function record -> key, "
                f"got {self.key!r}"
            )
        if self.semantic not in _SEMANTICS:
            raise ValueError(
                f"{name} semantic must be 'exactly_once' or 'at_least_once', got {self.semantic!r}"
            )
        check_format(name, "value_format", self.value_format)
        self.transaction_timeout_ms = check_positive_int(
            name, "transaction_timeout_ms", self.transaction_timeout_ms
        )
        self.config = check_config(name, self.config)

    def describe(self) -> dict[str, Any]:
        key = self.key if self.key is None or isinstance(self.key, str) else "<function>"
        return {
            "type": "Kafka",
            "topic": self.topic,
            "bootstrap": self.bootstrap,
            "key": key,
            "semantic": self.semantic,
            "value_format": self.value_format,
        }

    def create_writer(self, ctx: TaskContext) -> KafkaWriter:
        if self.semantic == "at_least_once":
            return _ProducingWriter(self, ctx)
        return _BufferingWriter(self, ctx)

    def create_committer(self, ctx: TaskContext) -> KafkaCommitter | None:
        if self.semantic == "at_least_once":
            return None
        return KafkaCommitter(self, ctx)


def _sink_name(sink: Kafka, ctx: TaskContext) -> str:
    return f"Kafka sink {ctx.operator_uid or ctx.task_name!r} (topic {sink.topic!r})"


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
        self._name = _sink_name(sink, ctx)
        self._encoder = _Encoder(sink, self._name)


class _ProducingWriter(KafkaWriter):
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
        ours = {**_PRODUCER, "delivery.report.only.error": True, "on_delivery": self._delivered}
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
            _discard(producer)  # what is not flushed is written again after a restore


class _BufferingWriter(KafkaWriter):
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


class KafkaCommitter(Committer):
    """Writes committables in one transaction each, with the checkpoint marker (see the
    module's docstring). Kafka calls run in one worker thread at a time."""

    #: How long one step (init, marker read, commit) waits for the brokers.
    timeout_s: float = METADATA_TIMEOUT_S
    #: Test hook: called inside each transaction, after its records were produced.
    _in_transaction: Callable[[str], None] | None = None

    def __init__(self, sink: Kafka, ctx: TaskContext) -> None:
        self._sink = sink
        self._ctx = ctx
        self._name = _sink_name(sink, ctx)
        self._producers: dict[str, Any] = {}  # transactional id -> initialized producer
        self._markers: dict[str, Any] = {}  # transactional id -> consumer of its marker group
        # transactional id -> the last checkpoint committed under it, once known: after
        # init_transactions fenced every other writer, only this committer moves it.
        self._committed: dict[str, int] = {}
        self._limiter = anyio.CapacityLimiter(1)

    def _config(self, client_id: str, ours: dict[str, Any]) -> dict[str, Any]:
        return client_config(self._sink.bootstrap, client_id, ours, self._sink.config or {})

    def _producer(self, owner: str) -> Any:
        producer = self._producers.get(owner)
        if producer is not None:
            return producer
        from confluent_kafka import KafkaException, Producer

        ours = {
            **_PRODUCER,
            "transactional.id": owner,
            "transaction.timeout.ms": self._sink.transaction_timeout_ms,
        }
        producer = Producer(self._config(owner, ours))
        try:
            # Fences every other producer with this id and aborts what it left open.
            producer.init_transactions(self.timeout_s)
        except KafkaException as exc:
            raise StateError(
                f"{self._name}: cannot start transactions under transactional id {owner!r} "
                f"at {self._sink.bootstrap!r} within {self.timeout_s:g} s: "
                f"{exc.args[0].str()} (are the brokers up?)"
            ) from None
        self._producers[owner] = producer
        return producer

    def _marker_consumer(self, owner: str) -> Any:
        consumer = self._markers.get(owner)
        if consumer is None:
            from confluent_kafka import Consumer

            ours = {
                "group.id": f"{owner}-commits",
                "enable.auto.commit": False,
                # committed() then waits for offsets of transactions still in flight.
                "isolation.level": "read_committed",
            }
            consumer = Consumer(self._config(f"{owner}-commits", ours))
            self._markers[owner] = consumer
        return consumer

    def marker(self, owner: str) -> int:
        """The last checkpoint committed under ``owner`` (-1: none). Blocking."""
        from confluent_kafka import TopicPartition

        consumer = self._marker_consumer(owner)
        [found] = retrying(
            lambda: consumer.committed(
                [TopicPartition(self._sink.topic, 0)], timeout=self.timeout_s
            ),
            self.timeout_s,
        )
        if found.error is not None:
            raise StateError(
                f"{self._name}: cannot read the commit marker of {owner!r}: {found.error.str()}"
            )
        return int(found.offset) if found.offset >= 0 else -1

    async def commit(self, committable: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self._commit, committable, limiter=self._limiter)

    async def clean_up(self, job_id: str, keep: list[dict[str, Any]], subtask: int | None) -> None:
        # Nothing a writer wrote stays uncommitted in Kafka: an open transaction is
        # aborted by the next init_transactions under its id, or by the broker's timeout.
        return None

    def _commit(self, committable: dict[str, Any]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        owner = committable["owner"]
        checkpoint = committable["checkpoint"]
        number = END_CHECKPOINT if checkpoint == "end" else int(checkpoint)
        producer = self._producer(owner)
        began = time.monotonic()
        try:
            last = self._committed.get(owner)
            if last is None:
                last = self._committed[owner] = self.marker(owner)
            if number <= last:
                log.info(
                    "%s: checkpoint %s of %s is already committed", self._name, checkpoint, owner
                )
                return
            began = time.monotonic()
            producer.begin_transaction()
            self._produce_all(producer, committable)
            if self._in_transaction is not None:
                self._in_transaction(owner)
            metadata = self._marker_consumer(owner).consumer_group_metadata()
            producer.send_offsets_to_transaction(
                [TopicPartition(self._sink.topic, 0, number)], metadata, self.timeout_s
            )
            self._commit_transaction(producer)
            self._committed[owner] = number
        except KafkaException as exc:
            error = exc.args[0]
            self._committed.pop(owner, None)  # read the marker again next time
            self._give_up(owner, producer, error)
            elapsed_ms = (time.monotonic() - began) * 1000
            raise StateError(self._commit_error(owner, checkpoint, error, elapsed_ms)) from None

    def _commit_transaction(self, producer: Any) -> None:
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self._sink.transaction_timeout_ms / 1000.0 + self.timeout_s
        while True:
            try:
                producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or time.monotonic() >= deadline:
                    raise

    def _produce_all(self, producer: Any, committable: dict[str, Any]) -> None:
        topic = self._sink.topic
        produce = producer.produce
        if "value_lines" in committable:
            values = committable["value_lines"].split("\n")
            key_lines = committable["key_lines"]
            keys = key_lines.split("\n") if key_lines is not None else [None] * len(values)
            if len(values) != committable["count"] or len(keys) != len(values):
                raise StateError(
                    f"{self._name}: the committable of {committable['owner']!r} at checkpoint "
                    f"{committable['checkpoint']} holds {len(values)} values and {len(keys)} "
                    f"keys, not {committable['count']}: the checkpoint is damaged"
                )
            pairs: Any = zip(keys, values, strict=True)
        else:
            keys_b64 = committable.get("keys") == "base64"
            values_b64 = committable.get("values") == "base64"

            def key(kt: str | None) -> bytes | None:
                if kt is None:
                    return None
                return base64.b64decode(kt) if keys_b64 else kt.encode("utf-8", "surrogatepass")

            pairs = (
                (key(kt), base64.b64decode(vt) if values_b64 else vt)
                for kt, vt in committable["records"]
            )
        for k, v in pairs:  # str keys and values go as UTF-8
            try:
                produce(topic, v, k)
            except BufferError:
                while True:
                    producer.poll(0.05)  # delivers reports, making room
                    try:
                        produce(topic, v, k)
                        break
                    except BufferError:
                        continue
        producer.poll(0)

    def _give_up(self, owner: str, producer: Any, error: Any) -> None:
        """After a failed commit: abort what can be aborted; a producer that is fenced or
        in a fatal state is dropped (the next commit makes a new one, which fences)."""
        from confluent_kafka import KafkaException

        if error.txn_requires_abort():
            try:
                producer.abort_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                log.warning("%s: aborting the transaction of %s failed: %s", self._name, owner, exc)
        dropped = self._producers.pop(owner, None)
        if dropped is not None:
            _discard(dropped)

    def _commit_error(self, owner: str, checkpoint: Any, error: Any, elapsed_ms: float) -> str:
        from confluent_kafka import KafkaError

        code = error.code()
        text = error.str()
        timeout = self._sink.transaction_timeout_ms
        where = (
            f"{self._name}: committing checkpoint {checkpoint} (transactional id {owner!r}, "
            f"brokers {self._sink.bootstrap!r}) failed: {text}"
        )
        kept = "The records are still in the checkpoint: the next commit writes them."
        if elapsed_ms >= timeout:
            return (
                f"{where}. The transaction took {elapsed_ms:.0f} ms, longer than "
                f"transaction_timeout_ms={timeout}, so the brokers aborted it: raise "
                "transaction_timeout_ms (at most the brokers' transaction.max.timeout.ms) or "
                f"check what slows the writes. {kept}"
            )
        fenced = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
        if code in fenced or "fenced" in text.lower() or "epoch" in text.lower():
            return (
                f"{where}. Another writer with the same transactional id took over (a newer "
                "attempt of this job, or the broker aborted this transaction because it "
                f"outlasted transaction_timeout_ms={timeout}): this writer stops; if no other "
                "attempt runs, raise transaction_timeout_ms (at most the brokers' "
                f"transaction.max.timeout.ms). {kept}"
            )
        if (
            code in (KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT)
            or "timed out" in text.lower()
        ):
            return (
                f"{where}. The transaction took longer than transaction_timeout_ms={timeout}: "
                "raise transaction_timeout_ms (at most the brokers' transaction.max.timeout.ms) "
                f"or check the brokers. {kept}"
            )
        return f"{where}. {kept}"

    def close(self) -> None:
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            _discard(producer)
        markers, self._markers = self._markers, {}
        for consumer in markers.values():
            consumer.close()


def _discard(producer: Any) -> None:
    """Drop what a producer still holds (an abandoned transaction's records) and close
    it now: a reference an exception's traceback keeps must not keep its threads and
    connections alive until the garbage collector finds it."""
    try:
        producer.purge()
        producer.flush(0)
    except Exception as exc:  # a fenced or fatal producer may refuse; it is dropped anyway
        log.debug("discarding a producer: %s", exc)
    try:
        producer.close()
    except Exception as exc:
        log.debug("closing a producer: %s", exc)
