"""Sources: where records come from. Each says whether it can be replayed.

These classes are descriptions (what to read); the node builds the reader that does the
reading. Only replayable sources give exactly-once results. ``Source`` is the base of
every source (``mesh.connectors``: write your own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mesh.connectors.base import Source
from mesh.connectors.kafka.source import Kafka
from mesh.errors import GraphError

__all__ = ["Collection", "Generator", "JsonLines", "Kafka", "Source", "TextFile", "ZmqPull"]


@dataclass(eq=False)
class Collection(Source):
    """The given items, split round-robin over the source subtasks. Bounded, replayable."""

    items: list[Any]

    def __init__(self, items: Iterable[Any]) -> None:
        if isinstance(items, str | bytes | dict):
            raise TypeError(
                f"Collection expects an iterable of records (a list), got {type(items).__name__}"
            )
        self.items = list(items)

    def describe(self) -> dict[str, Any]:
        return {"type": "Collection", "items": len(self.items)}


@dataclass(eq=False)
class _FileSource(Source):
    path: str
    follow: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise TypeError(
                f"{type(self).__name__} expects a path or glob string, got {self.path!r}"
            )
        self.bounded = not self.follow

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "path": self.path, "follow": self.follow}


@dataclass(eq=False)
class TextFile(_FileSource):
    """Lines of text files matching ``path`` (a path or a glob), newline stripped.

    Files are split by byte ranges over the source subtasks, so one large file is read in
    parallel. Bounded; replayable by (file, byte offset).
    """

    decodes = True

    def __init__(self, path: str) -> None:
        super().__init__(path=path, follow=False)


@dataclass(eq=False)
class JsonLines(_FileSource):
    """One JSON value per line from files matching ``path``; blank lines are skipped.

    Bounded unless ``follow=True`` (then it tails the files and picks up new ones).
    Replayable by (file, byte offset). A line that is not JSON is a dead letter (with
    the file and byte offset) when the job sets them aside; otherwise it fails the task
    with an error naming both.
    """

    decodes = True

    def __init__(self, path: str, follow: bool = False) -> None:
        if follow:
            raise GraphError("JsonLines(follow=True) is not supported yet (see the README)")
        super().__init__(path=path, follow=follow)


@dataclass(eq=False)
class Generator(Source):
    """Record ``i`` is ``fn(i)``, for ``i`` in ``0..count-1`` (or forever if ``count`` is None).

    Deterministic and replayable by index. ``rate`` caps the total records per second
    over all subtasks (for load tests). Subtask ``k`` of ``p`` makes ``i = k, k+p, ...``.
    """

    fn: Callable[[int], Any]
    count: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"Generator expects a function fn(i), got {type(self.fn).__name__}")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0
        ):
            raise ValueError(f"Generator count must be a non-negative int, got {self.count!r}")
        if self.rate is not None and not (
            isinstance(self.rate, int | float) and not isinstance(self.rate, bool) and self.rate > 0
        ):
            raise ValueError(f"Generator rate must be a positive number, got {self.rate!r}")
        self.bounded = self.count is not None

    def describe(self) -> dict[str, Any]:
        return {"type": "Generator", "count": self.count, "rate": self.rate}


@dataclass(eq=False)
class ZmqPull(Source):
    """Records from a ZeroMQ PUSH socket outside mesh: one JSON value per message.

    Each source subtask connects a PULL socket to ``endpoint`` (the outside producer
    binds), so ZeroMQ spreads messages over the subtasks. Unbounded and *not
    replayable*: after a failure, messages that were in flight are gone, so a job with
    this source is at-least-once at best. A message that is not JSON is a dead letter
    when the job sets them aside; otherwise it fails the task.
    """

    decodes = True

    endpoint: str

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or not self.endpoint.startswith("tcp://"):
            raise TypeError(f"ZmqPull expects a tcp:// endpoint, got {self.endpoint!r}")
        self.bounded = False
        self.replayable = False

    def describe(self) -> dict[str, Any]:
        return {"type": "ZmqPull", "endpoint": self.endpoint}
