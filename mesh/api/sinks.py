"""Sinks: where records go. Descriptions only; the node builds the writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Collect", "JsonLines", "Print", "Sink", "ZmqPush"]


class Sink:
    """Base of every sink description."""

    def describe(self) -> dict[str, Any]:
        """A JSON summary of the settings, for status output."""
        return {"type": type(self).__name__}


@dataclass(eq=False)
class JsonLines(Sink):
    """Writes one JSON line per record into part files under ``directory``.

    Each subtask writes ``.part-<job>-<uid>-<subtask>.jsonl.inprogress`` and renames it
    to ``part-<job>-<uid>-<subtask>.jsonl`` (fsynced) when its input ends or the job is
    cancelled, so readers that glob ``part-*.jsonl`` only see finished files. A subtask
    that fails removes its unfinished file.
    """

    directory: str

    def __post_init__(self) -> None:
        if not isinstance(self.directory, str) or not self.directory:
            raise TypeError(f"JsonLines expects a directory path, got {self.directory!r}")

    def describe(self) -> dict[str, Any]:
        return {"type": "JsonLines", "directory": self.directory}


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
