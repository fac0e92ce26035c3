"""``WindowedStream``: a keyed stream cut into windows, waiting for its window function.

    per_user = events.key_by(lambda e: e["user"]).window(windows.Tumbling("10s"))
    per_user.allowed_lateness("5s").late_output("late").count()

Settings (``allowed_lateness``, ``late_output``, ``trigger``) return the same windowed
stream; the window function (``count``, ``reduce``, ``aggregate``, ``process``) adds the
window operator and returns its output stream. Late records are then read with
``.side_output(tag)`` on that stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mesh.api import triggers
from mesh.api.functions import Aggregate
from mesh.api.windows import Global, WindowAssigner
from mesh.errors import GraphError
from mesh.graph.logical import OperatorKind
from mesh.time.durations import parse_duration

if TYPE_CHECKING:
    from mesh.api.job import InputRef, Job, OperatorDef
    from mesh.api.streams import Stream
    from mesh.graph.logical import OperatorSpec

__all__ = ["WindowSetup", "WindowedStream"]


@dataclass(frozen=True)
class WindowSetup:
    """Everything a window operator needs besides its key function."""

    assigner: WindowAssigner
    trigger: triggers.Trigger
    lateness_ms: int = 0
    late_tag: str | None = None
    function: str = ""  # "count", "reduce", "aggregate" or "process"
    fn: Any = None  # reduce: fn(a, b); aggregate: an Aggregate; process: fn(key, window, records)

    @property
    def event_time(self) -> bool:
        """Whether windows end by event time (watermarks) rather than by the clock."""
        return not self.assigner.processing_time

    def check(self, op: OperatorDef, upstream: list[OperatorSpec]) -> None:
        """GraphError unless the window operator can run on its inputs."""
        needs_timestamps = self.event_time and not isinstance(self.assigner, Global)
        missing = [up for up in upstream if not up.event_time]
        if needs_timestamps and missing:
            raise GraphError(
                f"window operator {op.uid or op.default_name!r}: event-time windows need "
                f"timestamped records, but {missing[0].uid!r} has none; give its source a "
                "WatermarkStrategy (job.source(..., watermarks=WatermarkStrategy.bounded(...))) "
                "or use processing_time=True on the window"
            )

    def describe(self) -> dict[str, Any]:
        """A JSON summary, for status output."""
        return {
            **self.assigner.describe(),
            **self.trigger.describe(),
            "allowed_lateness_ms": self.lateness_ms,
            "late_output": self.late_tag,
            "function": self.function,
        }


class WindowedStream:
    """A keyed stream cut into windows; finish it with a window function."""

    def __init__(
        self,
        job: Job,
        inputs: list[InputRef],
        key_fn: Callable[[Any], Any],
        assigner: WindowAssigner,
    ) -> None:
        if not isinstance(assigner, WindowAssigner):
            raise GraphError(
                "window() expects a window assigner such as windows.Tumbling('10s'), "
                f"got {assigner!r}"
            )
        trigger = assigner.default_trigger
        if trigger is None:
            raise GraphError(
                "windows.Global() needs a trigger, e.g. windows.Global(triggers.Count(100)), "
                "or .trigger(...) on the windowed stream"
            )
        self._job = job
        self._inputs = inputs
        self._key_fn = key_fn
        self._setup = WindowSetup(assigner=assigner, trigger=trigger)

    def __repr__(self) -> str:
        return f"WindowedStream({self._setup.assigner!r}, {self._setup.trigger!r})"

    # -- settings -------------------------------------------------------------------------

    def allowed_lateness(self, lateness: int | str) -> WindowedStream:
        """Keep each window ``lateness`` past its end: a late record within it updates
        the window and fires it again; later ones are late (see ``late_output``)."""
        if not self._setup.event_time or isinstance(self._setup.assigner, Global):
            raise GraphError(
                "allowed_lateness() applies to event-time windows (Tumbling, Sliding, Session)"
            )
        try:
            ms = parse_duration(lateness, what="allowed_lateness")
        except ValueError as exc:
            raise GraphError(str(exc)) from None
        self._setup = replace(self._setup, lateness_ms=ms)
        return self

    def late_output(self, tag: str) -> WindowedStream:
        """Send records too late for their windows to the side output ``tag`` (read it
        with ``.side_output(tag)`` on the result) instead of dropping them."""
        if not isinstance(tag, str) or not tag.strip():
            raise GraphError(f"late_output() needs a non-empty string tag, got {tag!r}")
        if not self._setup.event_time or isinstance(self._setup.assigner, Global):
            raise GraphError("late_output() applies to event-time windows: nothing else is late")
        self._setup = replace(self._setup, late_tag=tag)
        return self

    def trigger(self, trigger: triggers.Trigger) -> WindowedStream:
        """Replace the assigner's default trigger (see ``mesh.triggers``)."""
        if not isinstance(trigger, triggers.Trigger):
            raise GraphError(f"trigger() expects a mesh.triggers object, got {trigger!r}")
        self._setup = replace(self._setup, trigger=trigger)
        return self

    # -- window functions -------------------------------------------------------------------

    def _window(self, function: str, label: str, fn: Any = None) -> Stream:
        from mesh.api.streams import Stream

        setup = replace(self._setup, function=function, fn=fn)
        name = f"Window({setup.assigner!r}).{label}"
        op = self._job._add(
            OperatorKind.WINDOW,
            self._inputs,
            default_name=name,
            key_fn=self._key_fn,
            window=setup,
            description=setup.describe(),
        )
        from mesh.api.job import InputRef

        return Stream(self._job, [InputRef(op.id, None)], op.id)

    def count(self) -> Stream:
        """Per key and window: ``{"key", "window_start", "window_end", "count"}``."""
        return self._window("count", "count")

    def reduce(self, fn: Callable[[Any, Any], Any]) -> Stream:
        """Combine a window's records with ``fn(a, b)``; emits
        ``{"key", "window_start", "window_end", "value"}``."""
        if not callable(fn):
            raise GraphError(f"reduce() expects a function (a, b), got {fn!r}")
        return self._window("reduce", "reduce", fn)

    def aggregate(self, aggregate: Aggregate) -> Stream:
        """Fold a window's records into an ``Aggregate`` accumulator; emits
        ``{"key", "window_start", "window_end", "value": aggregate.result(acc)}``."""
        if isinstance(aggregate, type):
            raise GraphError(
                f"aggregate() expects an instance, not the class {aggregate.__name__}; add ()"
            )
        if not isinstance(aggregate, Aggregate):
            raise GraphError(
                f"aggregate() expects a mesh.Aggregate, got {type(aggregate).__name__}"
            )
        if self._setup.assigner.merging and type(aggregate).merge is Aggregate.merge:
            raise GraphError(
                f"{type(aggregate).__name__} must implement merge(a, b): Session windows merge"
            )
        return self._window("aggregate", type(aggregate).__name__, aggregate)

    def process(self, fn: Callable[[Any, Any, list[Any]], Any]) -> Stream:
        """Call ``fn(key, window, records)`` when a window fires; it returns or yields the
        records to emit (``window.start``/``window.end`` are ms). Keeps every record of a
        window in state: prefer ``reduce``/``aggregate`` for large windows."""
        if not callable(fn):
            raise GraphError(f"process() expects a function (key, window, records), got {fn!r}")
        return self._window("process", getattr(fn, "__name__", "process"), fn)
