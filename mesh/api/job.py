"""``Job``: the object a job file defines, and how it becomes a logical graph.

A job file builds a ``Job`` at module level; ``build()`` turns the recorded operators
into a ``LogicalGraph`` (pure data, sent to the coordinator) plus the operator
definitions that hold the user's functions (looked up by operator id on each node).
The same file imported on every node must build the same graph: module-level code has
to be deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesh.api.modes import check_mode, combines, operator_description
from mesh.api.restart import RestartStrategy
from mesh.api.sinks import JsonLines, Sink
from mesh.api.sources import Source
from mesh.api.watermarks import WatermarkStrategy
from mesh.errors import GraphError
from mesh.graph.keygroups import DEFAULT_MAX_PARALLELISM
from mesh.graph.logical import (
    DEAD_LETTER,
    Chaining,
    EdgeSpec,
    JobConfig,
    LogicalGraph,
    OperatorKind,
    OperatorSpec,
    Partitioning,
)
from mesh.time.durations import parse_duration

if TYPE_CHECKING:
    from mesh.api.streams import Stream

__all__ = ["BuiltJob", "InputRef", "Job", "OperatorDef"]

_CHECKPOINT_MODES = ("exactly_once", "at_least_once")
_STATE_BACKENDS = ("memory", "sqlite")
_ON_ERROR = ("fail", "dead_letter")
#: Operator kinds that run user code (their failures can become dead letters).
_USER_CODE = frozenset(OperatorKind) - {OperatorKind.SOURCE, OperatorKind.SINK}
#: Operator kinds that may emit side outputs (``ctx.output``, ``late_output``).
SIDE_OUTPUT_KINDS = frozenset(
    {OperatorKind.PROCESS, OperatorKind.KEYED_PROCESS, OperatorKind.WINDOW}
)
#: The uid of the dead-letter sink a job with on_error="dead_letter" gets.
DEAD_LETTER_UID = "dead-letters"

KeyFn = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class InputRef:
    """One input of an operator: the upstream operator and how records are spread."""

    op: int
    partitioning: Partitioning | None  # None: forward if parallelisms match, else rebalance
    key_fn: KeyFn | None = None  # set for hash partitioning
    tag: str | None = None  # a side output of ``op`` rather than its main output


def _decodes(source: Source | None) -> bool:
    return source is not None and source.decodes


@dataclass(eq=False)
class OperatorDef:
    """An operator as the user described it, with the user's functions."""

    id: int
    kind: OperatorKind
    inputs: list[InputRef]
    fn: Callable[..., Any] | None = None
    key_fn: KeyFn | None = None  # keyed operators: how to get the key of an input record
    field_name: str | None = None  # sum/min/max: the dict field
    source: Source | None = None
    sink: Sink | None = None
    watermarks: WatermarkStrategy | None = None  # sources: timestamps and watermarks
    window: Any = None  # window operators: a WindowSetup (mesh.api.windowed)
    aggregate: Any = None  # keyed aggregate: an Aggregate (mesh.api.functions)
    emit: str | None = None  # keyed aggregations: "every", "final" (None: the mode's)
    name: str | None = None
    uid: str | None = None
    parallelism: int | None = None
    chaining: Chaining = Chaining.ALWAYS
    slot_sharing_group: str | None = None
    co_location_group: str | None = None
    default_name: str = ""
    description: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BuiltJob:
    """A job's logical graph plus the definitions holding the user's functions."""

    graph: LogicalGraph
    operators: dict[int, OperatorDef]
    edge_key_fns: dict[tuple[int, int], KeyFn]

    def operator(self, op_id: int) -> OperatorDef:
        """The definition of operator ``op_id``."""
        return self.operators[op_id]


def positive_int(value: Any, what: str) -> int:
    """``value`` if it is an int >= 1 (not a bool); else GraphError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GraphError(f"{what} must be a positive int, got {value!r}")
    return value


def trace_fraction(value: Any, what: str) -> float:
    """``value`` as a fraction of records to trace (0 to 1); else GraphError naming
    ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise GraphError(f"{what} must be a fraction from 0 to 1, got {value!r}")
    return float(value)


def _duration(value: Any, what: str) -> int:
    try:
        return parse_duration(value, what=what)
    except ValueError as exc:
        raise GraphError(str(exc)) from None


class Job:
    """A streaming job: sources → operators → sinks.

    Args:
        name: the job's name, shown in ``mesh list``.
        parallelism: default parallelism of every operator.
        max_parallelism: number of key groups; the upper bound for rescaling keyed state.
        checkpoint_interval: how often to checkpoint (``"1s"``), or None for never.
        checkpoint_mode: ``"exactly_once"`` (aligned barriers) or ``"at_least_once"``.
        state_backend: ``"memory"`` or ``"sqlite"``.
        restart: what to do when a task fails (a ``RestartStrategy``; default:
            ``exponential()`` if the job checkpoints, else ``none()``).
        on_error: what a record that makes user code raise does: ``"fail"`` the task
            (default; the restart strategy decides what follows) or ``"dead_letter"``:
            the record, the operator uid and the traceback go to ``dead_letter`` and
            processing goes on.
        dead_letter: the sink for dead letters (default:
            ``sinks.JsonLines("dead-letters/<job name>")``).
        buffer_timeout: the longest a partly filled output buffer waits before it is sent.
        watermark_interval: how often sources with a ``WatermarkStrategy`` send
            watermarks (and processing-time timers are checked at least).
        checkpoint_dir: where this job's checkpoints go (default: the cluster's); relative
            paths resolve against the directory the job is submitted from.
        trace_sample: the fraction of source records traced end to end (0 to 1; default
            0, none), when the daemons export traces (``--otlp-endpoint``).
        trace_sample_limit: at most this many records a second start a trace, per source
            subtask (default 100; None: no limit), so tracing costs the same however
            fast the job runs.
        mode: ``"streaming"`` (default) or ``"batch"``: every source bounded, keyed
            aggregations emit each key's final value (``emit="final"``), no
            checkpoints (a failed run starts again from its inputs: restarts default to
            3, a second apart), transactional sinks commit at the end.
    """

    def __init__(
        self,
        name: str,
        *,
        parallelism: int = 1,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
        checkpoint_interval: int | str | None = None,
        checkpoint_mode: str = "exactly_once",
        state_backend: str = "memory",
        restart: RestartStrategy | None = None,
        buffer_timeout: int | str = "10ms",
        checkpoint_dir: str | None = None,
        on_error: str = "fail",
        dead_letter: Sink | None = None,
        watermark_interval: int | str = "200ms",
        trace_sample: float = 0.0,
        trace_sample_limit: int | None = 100,
        mode: str = "streaming",
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise GraphError(f"Job name must be a non-empty string, got {name!r}")
        self.name = name
        self.parallelism = positive_int(parallelism, "Job parallelism")
        self.max_parallelism = positive_int(max_parallelism, "Job max_parallelism")
        if self.parallelism > self.max_parallelism:
            raise GraphError(
                f"Job parallelism {parallelism} exceeds max_parallelism {max_parallelism}"
            )
        self.checkpoint_interval_ms = (
            None
            if checkpoint_interval is None
            else _duration(checkpoint_interval, "Job checkpoint_interval")
        )
        if checkpoint_mode not in _CHECKPOINT_MODES:
            raise GraphError(
                f"Job checkpoint_mode must be one of {', '.join(_CHECKPOINT_MODES)}, "
                f"got {checkpoint_mode!r}"
            )
        self.checkpoint_mode = checkpoint_mode
        if state_backend not in _STATE_BACKENDS:
            raise GraphError(
                f"Job state_backend must be one of {', '.join(_STATE_BACKENDS)}, "
                f"got {state_backend!r}"
            )
        self.state_backend = state_backend
        if restart is not None and not isinstance(restart, RestartStrategy):
            raise GraphError(
                "Job restart must be a RestartStrategy (e.g. RestartStrategy.fixed_delay(3, "
                f"'5s')), got {restart!r}"
            )
        self.restart = restart
        if on_error not in _ON_ERROR:
            raise GraphError(
                f"Job on_error must be one of {', '.join(_ON_ERROR)}, got {on_error!r}"
            )
        self.on_error = on_error
        if dead_letter is not None and not isinstance(dead_letter, Sink):
            raise GraphError(
                f"Job dead_letter must be a mesh.sinks object, got {type(dead_letter).__name__}"
            )
        if dead_letter is not None and on_error != "dead_letter":
            raise GraphError('Job dead_letter is only used with on_error="dead_letter"')
        self.dead_letter = dead_letter
        self.buffer_timeout_ms = _duration(buffer_timeout, "Job buffer_timeout")
        self.watermark_interval_ms = _duration(watermark_interval, "Job watermark_interval")
        if self.watermark_interval_ms <= 0:
            raise GraphError(
                f"Job watermark_interval must be above zero, got {watermark_interval!r}"
            )
        if checkpoint_dir is not None and (
            not isinstance(checkpoint_dir, str) or not checkpoint_dir
        ):
            raise GraphError(f"Job checkpoint_dir must be a directory path, got {checkpoint_dir!r}")
        self.checkpoint_dir = checkpoint_dir
        self.trace_sample = trace_fraction(trace_sample, "Job trace_sample")
        self.trace_sample_limit = (
            None
            if trace_sample_limit is None
            else positive_int(trace_sample_limit, "Job trace_sample_limit")
        )
        self.mode = check_mode(mode, "Job mode")
        self._operators: list[OperatorDef] = []

    def __repr__(self) -> str:
        return f"Job({self.name!r}, operators={len(self._operators)})"

    # -- building -----------------------------------------------------------------------

    def source(
        self,
        source: Source,
        *,
        watermarks: WatermarkStrategy | None = None,
        name: str | None = None,
    ) -> Stream:
        """Add a source; returns its stream of records.

        With ``watermarks`` (a ``WatermarkStrategy``) its records carry event time and
        the source sends watermarks, which event-time windows and timers need.
        """
        from mesh.api.streams import Stream

        if not isinstance(source, Source):
            raise GraphError(
                f"job.source() expects a mesh.sources object, got {type(source).__name__}"
            )
        if watermarks is not None and not isinstance(watermarks, WatermarkStrategy):
            raise GraphError(
                "job.source(): watermarks must be a WatermarkStrategy (e.g. "
                "WatermarkStrategy.bounded('2s', timestamp=lambda e: e['ts'])), "
                f"got {type(watermarks).__name__}"
            )
        description = source.describe()
        if watermarks is not None:
            description = {**description, "watermarks": watermarks.describe()}
        op = self._add(
            OperatorKind.SOURCE,
            [],
            source=source,
            watermarks=watermarks,
            default_name=f"Source: {type(source).__name__}",
            description=description,
        )
        if name is not None:
            op.name = name
        return Stream(self, [InputRef(op.id, None)], op.id)

    def _restart_for(self, interval_ms: int | None, batch: bool) -> RestartStrategy:
        if self.restart is not None:
            return self.restart
        if batch:  # nothing to restore: a restart runs the job again from its inputs
            return RestartStrategy.fixed_delay(3, "1s")
        return RestartStrategy.exponential() if interval_ms else RestartStrategy.none()

    def _add(self, kind: OperatorKind, inputs: list[InputRef], **fields: Any) -> OperatorDef:
        for ref in inputs:
            if not 0 <= ref.op < len(self._operators):
                raise GraphError("a stream from another Job cannot be used in this one")
        op = OperatorDef(id=len(self._operators), kind=kind, inputs=list(inputs), **fields)
        self._operators.append(op)
        return op

    def _operator(self, op_id: int) -> OperatorDef:
        return self._operators[op_id]

    def build(
        self,
        *,
        parallelism: int | None = None,
        checkpoint_interval_ms: int | None = None,
        trace_sample: float | None = None,
        mode: str | None = None,
    ) -> BuiltJob:
        """Resolve defaults and produce the logical graph.

        ``parallelism`` overrides the job's default parallelism (operators with an
        explicit ``set_parallelism`` keep theirs), as ``--parallelism`` does; so do
        ``checkpoint_interval_ms``, ``trace_sample`` and ``mode`` for theirs.

        In batch mode every source must be bounded; the job takes no checkpoints (a
        failed run starts again from its inputs) and keyed aggregations emit each key's
        final value unless told otherwise.
        """
        mode = self.mode if mode is None else check_mode(mode, "mode")
        batch = mode == "batch"
        if batch:
            for op in self._operators:
                if op.source is not None and not op.source.bounded:
                    raise GraphError(
                        f"batch mode needs bounded sources: source "
                        f"{op.uid or op.name or op.default_name!r} ({type(op.source).__name__}) is "
                        "unbounded; run it in streaming mode"
                    )
        default_p = self.parallelism if parallelism is None else parallelism
        positive_int(default_p, "parallelism")
        if default_p > self.max_parallelism:
            raise GraphError(
                f"parallelism {default_p} exceeds the job's max_parallelism {self.max_parallelism}"
            )
        if checkpoint_interval_ms is None:
            interval = self.checkpoint_interval_ms
        else:
            interval = _duration(checkpoint_interval_ms, "checkpoint interval")
        if batch:
            interval = None  # a failed batch run starts again from its inputs
        config = JobConfig(
            name=self.name,
            parallelism=default_p,
            max_parallelism=self.max_parallelism,
            buffer_timeout_ms=self.buffer_timeout_ms,
            checkpoint_interval_ms=interval,
            checkpoint_mode=self.checkpoint_mode,
            state_backend=self.state_backend,
            checkpoint_dir=self.checkpoint_dir,
            restart=self._restart_for(interval, batch).to_dict(),
            on_error=self.on_error,
            watermark_interval_ms=self.watermark_interval_ms,
            trace_sample=(
                self.trace_sample
                if trace_sample is None
                else trace_fraction(trace_sample, "trace sample")
            ),
            trace_sample_limit=self.trace_sample_limit,
            mode=mode,
        )
        specs: list[OperatorSpec] = []
        edges: list[EdgeSpec] = []
        key_fns: dict[tuple[int, int], KeyFn] = {}
        groups: list[str] = []
        for op in self._operators:
            event_time = self._event_time(op, specs)
            p = default_p if op.parallelism is None else op.parallelism
            if p > self.max_parallelism:
                raise GraphError(
                    f"operator {op.uid or op.default_name!r}: parallelism {p} exceeds "
                    f"max_parallelism {self.max_parallelism}"
                )
            if op.slot_sharing_group is not None:
                group = op.slot_sharing_group
            else:
                inherited = {groups[ref.op] for ref in op.inputs}
                group = inherited.pop() if len(inherited) == 1 else "default"
            groups.append(group)
            specs.append(
                OperatorSpec(
                    id=op.id,
                    uid=op.uid if op.uid is not None else f"{op.kind}-{op.id}",
                    name=op.name if op.name is not None else op.default_name,
                    kind=op.kind,
                    parallelism=p,
                    max_parallelism=self.max_parallelism,
                    chaining=op.chaining,
                    slot_sharing_group=group,
                    co_location_group=op.co_location_group,
                    description=operator_description(
                        op,
                        batch,
                        combines(op, batch, [specs[r.op] for r in op.inputs], self.on_error),
                    ),
                    event_time=event_time,
                )
            )
            for ref in op.inputs:
                up = specs[ref.op]
                part = ref.partitioning
                if part is None:
                    part = Partitioning.FORWARD if up.parallelism == p else Partitioning.REBALANCE
                if any(
                    e.source == ref.op and e.target == op.id and e.tag == ref.tag for e in edges
                ):
                    raise GraphError(
                        f"operator {specs[-1].uid!r} takes the same stream twice; "
                        "union a stream with itself is not supported"
                    )
                if ref.tag is not None and up.kind not in SIDE_OUTPUT_KINDS:
                    raise GraphError(
                        f"side_output({ref.tag!r}) of operator {up.uid!r} ({up.kind}): only "
                        "process functions and windows emit side outputs"
                    )
                edges.append(EdgeSpec(source=ref.op, target=op.id, partitioning=part, tag=ref.tag))
                if ref.key_fn is not None:
                    key_fns[(ref.op, op.id)] = ref.key_fn
        definitions = {op.id: op for op in self._operators}
        if self.on_error == "dead_letter":
            self._add_dead_letters(specs, edges, definitions)
        graph = LogicalGraph(config=config, operators=tuple(specs), edges=tuple(edges))
        graph.validate()
        return BuiltJob(graph=graph, operators=definitions, edge_key_fns=key_fns)

    def _event_time(self, op: OperatorDef, specs: list[OperatorSpec]) -> bool:
        """Whether ``op``'s output records carry event timestamps (and check that an
        event-time window gets them)."""
        if op.kind is OperatorKind.SOURCE:
            return op.watermarks is not None
        upstream = [specs[ref.op] for ref in op.inputs]
        if op.window is not None:
            op.window.check(op, upstream)
        return any(up.event_time for up in upstream)

    def _add_dead_letters(
        self,
        specs: list[OperatorSpec],
        edges: list[EdgeSpec],
        definitions: dict[int, OperatorDef],
    ) -> None:
        """The dead-letter sink, fed by a side output of every operator running user code,
        and of every source that decodes its input (a line that is not JSON)."""
        # Sources with watermarks run the user's timestamp function.
        sources = [
            spec.id
            for spec in specs
            if spec.kind in _USER_CODE
            or (
                spec.kind is OperatorKind.SOURCE
                and (spec.event_time or _decodes(definitions[spec.id].source))
            )
        ]
        if not sources:
            return  # no user code, nothing can fail a record
        if any(spec.uid == DEAD_LETTER_UID for spec in specs):
            raise GraphError(
                f"uid {DEAD_LETTER_UID!r} is taken by the dead-letter sink of a job with "
                'on_error="dead_letter"; give your operator another uid'
            )
        sink = self.dead_letter or JsonLines(f"dead-letters/{self.name}")
        sink_id = len(specs)
        definitions[sink_id] = OperatorDef(
            id=sink_id,
            kind=OperatorKind.SINK,
            inputs=[],
            sink=sink,
            default_name="Dead letters",
            description=sink.describe(),
        )
        specs.append(
            OperatorSpec(
                id=sink_id,
                uid=DEAD_LETTER_UID,
                name="Dead letters",
                kind=OperatorKind.SINK,
                parallelism=1,
                max_parallelism=self.max_parallelism,
                chaining=Chaining.NEVER,
                slot_sharing_group="default",
                co_location_group=None,
                description=sink.describe(),
            )
        )
        edges.extend(
            EdgeSpec(
                source=source, target=sink_id, partitioning=Partitioning.REBALANCE, tag=DEAD_LETTER
            )
            for source in sources
        )
