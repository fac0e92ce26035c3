"""Sinks: where records go. Descriptions only; the node builds the writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Collect", "JsonLines", "Print", "Sink"]


class Sink:
    """Base of every sink description."""

    def describe(self) -> dict[str, Any]:
        """A JSON summary of the settings, for status output."""
        return {"type": type(self).__name__}


@dataclass(eq=False)
class JsonLines(Sink):
    """Writes one JSON line per record into part files under ``directory``.

    Each subtask writes ``.part-<job>-<subtask>.jsonl.inprogress`` and renames it to
    ``part-<job>-<subtask>.jsonl`` (fsynced) when its input ends, so readers that glob
    ``part-*.jsonl`` only see finished files.
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
    coordinator's memory until the client fetched it: meant for small results.
    """

    records: list[Any] = field(default_factory=list, repr=False)
