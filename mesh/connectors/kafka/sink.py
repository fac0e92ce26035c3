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

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

from mesh.connectors.base import Sink
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.settings import (
    check_bootstrap,
    check_config,
    check_format,
    check_positive_int,
    require_client,
)

if TYPE_CHECKING:
    from mesh.connectors.kafka.committer import KafkaCommitter
    from mesh.connectors.kafka.writers import KafkaWriter

__all__ = ["END_CHECKPOINT", "PRODUCER", "Kafka", "sink_name", "transactional_id"]

_SEMANTICS = ("exactly_once", "at_least_once")
#: The marker of the final commit of a bounded job (checkpoint "end"): above every id.
END_CHECKPOINT = 2**62
PRODUCER = {
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
        # The writers and the committer (and the client) are imported on the nodes only.
        from mesh.connectors.kafka.writers import BufferingWriter, ProducingWriter

        if self.semantic == "at_least_once":
            return ProducingWriter(self, ctx)
        return BufferingWriter(self, ctx)

    def create_committer(self, ctx: TaskContext) -> KafkaCommitter | None:
        from mesh.connectors.kafka.committer import KafkaCommitter

        if self.semantic == "at_least_once":
            return None
        return KafkaCommitter(self, ctx)


def sink_name(sink: Kafka, ctx: TaskContext) -> str:
    """How errors and logs name the sink subtask's sink."""
    return f"Kafka sink {ctx.operator_uid or ctx.task_name!r} (topic {sink.topic!r})"
