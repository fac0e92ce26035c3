"""``sources.Kafka``: records from Kafka topics, read in splits that are topic partitions
(the description; ``reader.py`` reads).

Each partition is a split ``{"topic", "partition", "offset", "stop"}``: ``offset`` is
the next offset to hand out, ``stop`` the end offset of a bounded source (or null). A
partition belongs to one source subtask (``owner``: a hash of the topic name plus the
partition number, the same in every process); the reader assigns its partitions to a
consumer with explicit offsets (no group rebalancing), and its splits are the source's
state at every checkpoint, so a restored job reads on from exactly where the checkpoint
was, at any parallelism. The consumer group (``group``) only receives the offsets of
completed checkpoints, for monitoring and for ``start="committed"``.

The consumer reads ``read_committed``: records of aborted transactions are never read,
and records of open ones only once they commit.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

from mesh.connectors.base import Source
from mesh.connectors.context import TaskContext
from mesh.connectors.kafka.settings import (
    check_bootstrap,
    check_config,
    check_format,
    check_positive_int,
    require_client,
)
from mesh.errors import GraphError

if TYPE_CHECKING:
    from mesh.connectors.kafka.reader import KafkaReader

__all__ = ["Kafka", "owner", "split_id"]

_STARTS = ("earliest", "latest", "committed")


def owner(topic: str, partition: int, parallelism: int) -> int:
    """The source subtask that reads ``partition`` of ``topic``: the same in every
    process (``zlib.crc32``, not Python's salted ``hash``), and a topic's partitions go
    round-robin over the subtasks."""
    return (zlib.crc32(topic.encode()) + partition) % parallelism


def split_id(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


@dataclass(eq=False)
class Kafka(Source):
    """Records from Kafka ``topics`` (a name or a list), or from every topic whose whole
    name matches the regular expression ``pattern``.

    - ``start``: where a job that starts without a checkpoint begins, per partition:
      ``"earliest"``, ``"latest"``, ``"committed"`` (the offsets committed by consumer
      group ``group``; earliest where it has none), a dict ``{partition: offset}`` (for
      every topic; partitions not listed start at earliest; offsets are kept inside the
      partition's log), or an int: a timestamp in ms (the first record at or after it).
      A job restored from a checkpoint always goes on from the checkpoint.
    - ``stop_at``: None (unbounded) or ``"latest"``: bounded, each partition ends at its
      end offset (last stable offset) when the job first starts; the source ends when
      every partition has reached it. Partitions created later are not read.
    - ``value_format``: ``"json"``, ``"text"`` (UTF-8 ``str``) or ``"bytes"`` (Python
      ``bytes``: not JSON, so convert them before a keyed or network edge). A value
      that cannot be decoded is a dead letter (with topic, partition and offset) when
      the job sets them aside; otherwise it fails the task. A null value is ``None``.
    - ``key``: None (the record is the decoded value) or a format for the message key:
      the record is then ``{"key": <decoded key or None>, "value": <decoded value>}``.
    - ``group``: the consumer group that gets the offsets of completed checkpoints (for
      monitoring, and ``start="committed"``); without it nothing is committed.
    - ``discovery_interval_ms``: how often an unbounded source looks for new partitions
      (and, with ``pattern``, new topics); new ones are read from the earliest offset.
    - ``config``: extra librdkafka consumer settings (security, timeouts), which win.

    Replayable: each partition's offset is in the checkpoint.
    """

    topics: list[str] | None = None
    _: KW_ONLY
    bootstrap: str
    pattern: str | None = None
    group: str | None = None
    start: str | int | dict[int, int] = "earliest"
    stop_at: str | None = None
    value_format: str = "json"
    key: str | None = None
    discovery_interval_ms: int = 5000
    config: dict[str, str] | None = None

    decodes = True
    replayable = True

    def __post_init__(self) -> None:
        name = "sources.Kafka"
        require_client(name)
        topics: object = self.topics  # a name is accepted too
        if isinstance(topics, str):
            topics = [topics]
        if topics is not None:
            if not isinstance(topics, list | tuple) or not all(
                isinstance(t, str) and t for t in topics
            ):
                raise TypeError(
                    f"{name} topics must be a topic name or a list of names, got {self.topics!r}"
                )
            if not topics:
                raise ValueError(f"{name} topics is empty: name at least one topic")
            self.topics = list(dict.fromkeys(topics))
        if self.pattern is not None:
            if not isinstance(self.pattern, str) or not self.pattern:
                raise TypeError(
                    f"{name} pattern must be a regular expression, got {self.pattern!r}"
                )
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(
                    f"{name} pattern {self.pattern!r} is not a regular expression: {exc}"
                ) from None
        if (self.topics is None) == (self.pattern is None):
            raise GraphError(f"{name} needs exactly one of topics and pattern")
        self.bootstrap = check_bootstrap(name, self.bootstrap)
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise TypeError(f"{name} group must be a consumer group name, got {self.group!r}")
        start = self.start
        if isinstance(start, str):
            if start not in _STARTS:
                raise ValueError(
                    f"{name} start must be 'earliest', 'latest', 'committed', a dict "
                    f"{{partition: offset}} or a timestamp in ms, got {start!r}"
                )
            if start == "committed" and self.group is None:
                raise GraphError(f"{name} start='committed' needs group (whose offsets to use)")
        elif isinstance(start, dict):
            for partition, offset in start.items():
                if (
                    isinstance(partition, bool)
                    or not isinstance(partition, int)
                    or partition < 0
                    or isinstance(offset, bool)
                    or not isinstance(offset, int)
                    or offset < 0
                ):
                    raise ValueError(
                        f"{name} start: a dict maps partition numbers to offsets (ints >= 0), "
                        f"got {partition!r}: {offset!r}"
                    )
            self.start = dict(start)
        elif isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise TypeError(
                f"{name} start must be 'earliest', 'latest', 'committed', a dict "
                f"{{partition: offset}} or a timestamp in ms (int >= 0), got {start!r}"
            )
        if self.stop_at not in (None, "latest"):
            raise ValueError(
                f"{name} stop_at must be None (unbounded) or 'latest', got {self.stop_at!r}"
            )
        check_format(name, "value_format", self.value_format)
        check_format(name, "key", self.key, optional=True)
        self.discovery_interval_ms = check_positive_int(
            name, "discovery_interval_ms", self.discovery_interval_ms
        )
        self.config = check_config(name, self.config)
        self.bounded = self.stop_at is not None

    def describe(self) -> dict[str, Any]:
        return {
            "type": "Kafka",
            "topics": self.topics,
            "pattern": self.pattern,
            "bootstrap": self.bootstrap,
            "group": self.group,
            "start": self.start
            if not isinstance(self.start, dict)
            else {str(p): o for p, o in self.start.items()},
            "stop_at": self.stop_at,
            "value_format": self.value_format,
            "key": self.key,
        }

    def create_reader(self, ctx: TaskContext) -> KafkaReader:
        # The reader (and the client under it) is only imported on the nodes that read.
        from mesh.connectors.kafka.reader import KafkaReader

        return KafkaReader(self, ctx)
