"""The committer of an exactly-once ``sinks.Kafka`` (``sink.py`` says how it works): each
committable in one transaction, with the commit marker that makes a repeat a no-op."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from typing import Any

from mesh.connectors.base import Committer
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.blocking import call_bounded, close_clients, discard
from mesh.connectors.kafka.settings import METADATA_TIMEOUT_S, client_config, retrying
from mesh.connectors.kafka.sink import (
    END_CHECKPOINT,
    PRODUCER,
    Kafka,
    sink_name,
)
from mesh.errors import StateError

log = logging.getLogger("mesh.connectors.kafka")

# How long flush/commit steps wait for the brokers before they check again.
_WAIT_S = 1.0

__all__ = ["KafkaCommitter"]


class KafkaCommitter(Committer):
    """Writes committables in one transaction each, with the checkpoint marker (see the
    module's docstring). Each commit runs in a daemon thread, bounded by
    ``commit_limit_s`` (``blocking.py`` says why)."""

    #: How long one step (init, marker read, commit) waits for the brokers.
    timeout_s: float = METADATA_TIMEOUT_S
    #: How many such steps a commit's bound allows for, besides the transaction itself.
    _BOUNDED_STEPS = 4
    #: Test hook: called inside each transaction, after its records were produced.
    _in_transaction: Callable[[str], None] | None = None

    def __init__(self, sink: Kafka, ctx: TaskContext) -> None:
        self._sink = sink
        self._ctx = ctx
        self._name = sink_name(sink, ctx)
        self._producers: dict[str, Any] = {}  # transactional id -> initialized producer
        self._markers: dict[str, Any] = {}  # transactional id -> consumer of its marker group
        # transactional id -> the last checkpoint committed under it, once known: after
        # init_transactions fenced every other writer, only this committer moves it.
        self._committed: dict[str, int] = {}

    @property
    def commit_limit_s(self) -> float:
        """The longest one commit may take: the brokers abort a transaction older than
        ``transaction_timeout_ms``, and the steps around it each wait ``timeout_s`` at
        most; a commit that takes longer is stuck in the client."""
        return self._sink.transaction_timeout_ms / 1000.0 + self._steps_s

    @property
    def _steps_s(self) -> float:
        return self._BOUNDED_STEPS * self.timeout_s

    def _config(self, client_id: str, ours: dict[str, Any]) -> dict[str, Any]:
        return client_config(self._sink.bootstrap, client_id, ours, self._sink.config or {})

    def _producer(self, owner: str) -> Any:
        producer = self._producers.get(owner)
        if producer is not None:
            return producer
        from confluent_kafka import KafkaException, Producer

        ours = {
            **PRODUCER,
            "transactional.id": owner,
            "transaction.timeout.ms": self._sink.transaction_timeout_ms,
        }
        producer = Producer(self._config(owner, ours))
        try:
            # Fences every other producer with this id and aborts what it left open.
            producer.init_transactions(self.timeout_s)
        except KafkaException as exc:
            discard(producer)
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
        owner = committable["owner"]
        limit_s = self.commit_limit_s
        try:
            await call_bounded(self._commit, committable, limit_s=limit_s, name=f"commit {owner}")
        except TimeoutError:
            # The thread goes on in the client: its producer is not used again, and the
            # next attempt's init_transactions fences it.
            self._producers.pop(owner, None)
            self._committed.pop(owner, None)
            raise StateError(
                f"{self._name}: committing checkpoint {committable['checkpoint']} "
                f"(transactional id {owner!r}, brokers {self._sink.bootstrap!r}) did not "
                f"finish within {limit_s:g} s (transaction_timeout_ms="
                f"{self._sink.transaction_timeout_ms} plus {self._steps_s:g} s): the "
                "brokers did not complete it. The records are still in the checkpoint: the "
                "restarted job commits them."
            ) from None

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
        if self._producers.get(owner) is producer:
            del self._producers[owner]
        discard(producer)

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
        markers, self._markers = self._markers, {}
        discard(*producers.values())
        close_clients(markers.values())
