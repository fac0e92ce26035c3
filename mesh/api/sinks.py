"""Sinks: where records go. Descriptions only; the node builds the writer. ``Sink`` is the
base of every sink (``mesh.connectors``: write your own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh.connectors.base import Sink
from mesh.connectors.kafka.sink import Kafka

__all__ = ["Collect", "JsonLines", "Kafka", "Print", "SQLite", "Sink", "ZmqPush"]


@dataclass(eq=False)
class JsonLines(Sink):
    """Writes one JSON line per record into part files under ``directory``.

    Exactly-once: each subtask writes a hidden in-progress file; at every checkpoint it
    is fsynced and set aside, and when that checkpoint completes it is renamed to
    ``part-<job>-<uid>-<subtask>-<checkpoint>.jsonl``. Readers that glob
    ``part-*.jsonl`` therefore only ever see committed records. A bounded job's last
    part (``...-end.jsonl``) appears when the whole job has ended. Without checkpoints,
    cancelling a job makes what was written visible too.
    """

    directory: str

    def __post_init__(self) -> None:
        if not isinstance(self.directory, str) or not self.directory:
            raise TypeError(f"JsonLines expects a directory path, got {self.directory!r}")

    def describe(self) -> dict[str, Any]:
        return {"type": "JsonLines", "directory": self.directory}


@dataclass(eq=False)
class SQLite(Sink):
    """Writes dict records as rows of ``table`` in the SQLite database at ``path``.

    Exactly-once: rows are staged in the database and moved into the table in one
    transaction when the checkpoint that covers them completes (or when a bounded job
    ends). The table is created from the first record's fields if it does not exist;
    fields seen later become new columns. With ``key``, a row with the same key is
    replaced (upsert) instead of added.
    """

    path: str
    table: str
    key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise TypeError(f"SQLite expects a database path, got {self.path!r}")
        if not isinstance(self.table, str) or not self.table.replace("_", "").isalnum():
            raise TypeError(
                f"SQLite table must be a plain name (letters, digits, _), got {self.table!r}"
            )
        if self.key is not None and not isinstance(self.key, str):
            raise TypeError(f"SQLite key must be a field name, got {self.key!r}")

    def describe(self) -> dict[str, Any]:
        return {"type": "SQLite", "path": self.path, "table": self.table, "key": self.key}


@dataclass(eq=False)
class Print(Sink):
    """Prints each record as a JSON line, prefixed with the subtask (``2> {...}``), to the
    stdout of the node that runs it."""


@dataclass(eq=False)
class Collect(Sink):
    """Sends the records back to the client that ran the job (for tests and notebooks).

    ``mesh run`` prints them when the job ends. Everything collected is held in the
    coordinator's memory while it keeps the job: meant for small results.
    """


@dataclass(eq=False)
class ZmqPush(Sink):
    """Sends each record as one JSON message to a ZeroMQ PULL socket outside mesh.

    Each sink subtask connects a PUSH socket to ``endpoint`` (the outside consumer
    binds). When the consumer falls behind, the sink waits — and the backpressure walks
    up the job to its sources.
    """

    endpoint: str
    high_water_mark: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint.startswith("tcp://"):
            raise TypeError(f"ZmqPush expects a tcp:// endpoint, got {self.endpoint!r}")

    def describe(self) -> dict[str, Any]:
        return {"type": "ZmqPush", "endpoint": self.endpoint}
