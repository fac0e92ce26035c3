"""A subtask's chain: its operators run as plain function calls on whole batches.

``Chain.push`` runs a batch (with its event timestamps, on a stream with event time)
through the operators from a given one on, then hands what comes out to the sink or
to the main output edges. Side-output records go to the edges reading their tag. With
dead letters on (``on_error="dead_letter"``), a record that makes user code raise is
set aside on its operator's dead-letter edge and the rest of the batch goes on.

It is synchronous: the subtask loop awaits around it (state I/O, backpressure), the
event-time collaborator pushes what timers emit through it.

Everything the chain hands on — to its output edges, or to its sink — passes one spot at
the end of ``push``, where a peek (``mesh.node.runtime.peek``) taps it while one runs; at
other times that costs a single ``is None`` test per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.errors import RecordError
from mesh.graph.logical import DEAD_LETTER, OperatorSpec
from mesh.node.connectors.writers import SinkOperator
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.records import RecordFailure, dead_letter
from mesh.node.runtime.metrics import TaskMetrics
from mesh.node.runtime.output import EdgeWriter

# Records of an operator's ``finish`` output pushed down the chain at a time.
_FINISH_SLICE = 1024

__all__ = ["Chain", "PeekTap", "SideOutputs"]

#: Side-output edges by operator uid and tag (dead letters among them).
SideOutputs = dict[str, dict[str, list[EdgeWriter]]]

#: Sees each batch the chain hands on, before the edges or the sink get it; must not
#: change it.
PeekTap = Callable[[list[Any]], None]


class Chain:
    """The operators of one subtask and where their output goes."""

    def __init__(
        self,
        operators: list[RuntimeOperator],
        writers: list[EdgeWriter],
        side_outputs: SideOutputs,
        *,
        subtask_index: int,
        metrics: TaskMetrics,
    ) -> None:
        self.operators = operators
        self.subtask_index = subtask_index
        self.metrics = metrics
        self._side_outputs = side_outputs
        # The dead-letter edge of each operator that has one (None: dead letters off).
        self._dead_letters = {
            uid: tags[DEAD_LETTER][0] for uid, tags in side_outputs.items() if tags.get(DEAD_LETTER)
        } or None
        # Records of the chain's main output go to every edge that is no side output.
        side = {id(w) for tags in side_outputs.values() for ws in tags.values() for w in ws}
        self._outputs = [w for w in writers if id(w) not in side]
        # A sink can only be the last operator of a chain; records_out counts what it got.
        last = operators[-1] if operators else None
        self.sink = last if isinstance(last, SinkOperator) else None
        self.transforms = operators[:-1] if self.sink is not None else list(operators)
        # The chain head, when its keyed state must be loaded/stored around each batch.
        head = self.transforms[0] if self.transforms else None
        self.io_head = head if head is not None and head.backend and head.backend.needs_io else None
        #: What a running peek taps the chain's output with (None: no peek, the usual).
        self.peek: PeekTap | None = None

    def push(self, batch: list[Any], stamps: list[int] | None, start: int = 0) -> None:
        """Run ``batch`` (with its event ``stamps``, if it has any) through the chain from
        operator ``start`` on, then to the sink or the output edges."""
        divert = self._dead_letters is not None
        for op in self.transforms[start:] if start else self.transforms:
            if divert:
                batch, stamps = self._process_or_divert(op, batch, stamps)
            elif stamps is None:
                batch = op.process(batch)
            else:
                batch, stamps = op.process_timed(batch, stamps)
            if op.side_records:
                self.route_side(op)
            if not batch:
                return
        self.metrics.records_out += len(batch)
        if self.peek is not None:  # the one test a batch pays while nobody peeks
            self.peek(batch)
        if self.sink is not None:
            self.sink.process(batch)
        for writer in self._outputs:
            writer.write(batch, stamps)

    def _process_or_divert(
        self, op: RuntimeOperator, batch: list[Any], stamps: list[int] | None
    ) -> tuple[list[Any], list[int] | None]:
        """``op.process``, with each record that makes user code raise set aside as a dead
        letter (the record, the operator, the traceback) while the rest go on."""
        assert self._dead_letters is not None
        writer = self._dead_letters.get(op.spec.uid)
        if writer is None:
            if stamps is None:
                return op.process(batch), None
            return op.process_timed(batch, stamps)
        out: list[Any] = []
        times: list[int] | None = None if stamps is None else []
        while batch:
            try:
                if stamps is None or times is None:
                    out.extend(op.process(batch))
                else:
                    made, made_stamps = op.process_timed(batch, stamps)
                    out.extend(made)
                    times.extend(made_stamps)
                break
            except RecordFailure as failure:
                out.extend(failure.output)
                if stamps is not None and times is not None:
                    prefix = failure.stamps
                    times.extend(stamps[: failure.index] if prefix is None else prefix)
                    stamps = stamps[failure.index + 1 :]
                record = batch[failure.index]
                writer.write([dead_letter(op.spec, self.subtask_index, record, failure)])
                self.metrics.dead_letters += 1
                batch = batch[failure.index + 1 :]
        return out, times

    def set_aside(self, spec: OperatorSpec, record: Any, error: RecordError) -> None:
        """A record ``spec`` could not handle: to its dead-letter edge, or ``error`` is
        raised (dead letters off: it fails the subtask)."""
        writer = self._dead_letters.get(spec.uid) if self._dead_letters is not None else None
        if writer is None:
            raise error
        failure = RecordFailure(error, 0, [])
        writer.write([dead_letter(spec, self.subtask_index, record, failure)])
        self.metrics.dead_letters += 1

    def route_side(self, op: RuntimeOperator) -> None:
        """Send ``op``'s side-output records to the edges reading them (others are dropped:
        nobody asked for that tag)."""
        records = op.side_records
        if not records:
            return
        taken = list(records)
        records.clear()
        routes = self._side_outputs.get(op.spec.uid)
        if not routes:
            return
        by_tag: dict[str, tuple[list[Any], list[int]]] = {}
        for tag, record, stamp in taken:
            if tag in routes:
                batch, stamps = by_tag.setdefault(tag, ([], []))
                batch.append(record)
                stamps.append(stamp)
        for tag, (batch, stamps) in by_tag.items():
            for writer in routes[tag]:
                writer.write(batch, stamps)

    async def finish(self) -> None:
        """End of input: each operator emits what it held back, down the rest of the chain."""
        for index, op in enumerate(self.transforms):
            out = await op.finish()
            # In slices: all of a final aggregate's values at once would make one frame
            # as large as its state.
            for start in range(0, len(out), _FINISH_SLICE):
                self.push(out[start : start + _FINISH_SLICE], None, index + 1)
