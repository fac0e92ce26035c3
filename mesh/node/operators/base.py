"""Runtime operators: what runs inside a chain, one batch at a time.

Each operator turns a list of records into a list of records with plain loops and
comprehensions — no per-record ``await`` — which is what makes a chain of Python
functions fast. When user code raises, the batch is replayed record by record to name
the record at fault (user functions should be free of side effects, as in any stream
processor that replays after failures).

Keyed operators keep their state in tables of a ``KeyedStateBackend`` (dicts from key
to value, in memory or a cache over SQLite); the subtask snapshots the backend at each
checkpoint barrier. Operators with list state (sources' positions, sinks' pending
transactions) return it from ``snapshot_state`` and get it back in ``initialize``.

On a stream with event time, batches come with a parallel list of timestamps:
``process_timed`` returns the output with its timestamps (an output record inherits the
timestamp of the record it came from). Operators with timers (keyed process functions,
windows) fire them in ``on_watermark`` and ``on_processing_time``. Records for a side
output go to ``side_records`` as (tag, record, timestamp); the subtask routes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.errors import RecordError
from mesh.graph.keygroups import KeyGroupRange, canonical_key
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.records import RecordFailure, UserCodeError, describe_record
from mesh.state.backends import KeyedStateBackend
from mesh.time.watermarks import NO_WATERMARK

__all__ = ["KeyedOperator", "Output", "RestoredState", "RuntimeOperator"]


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What one operator subtask gets back from a checkpoint."""

    checkpoint_id: int
    job_id: str  # the job that took the checkpoint
    keyed_files: list[Path]  # snapshot files whose key groups overlap ours
    key_groups: KeyGroupRange  # the key groups this subtask owns now
    operator_state: dict[str, list[Any]]  # list state: this subtask's share
    all_operator_state: dict[str, list[Any]]  # list state of every old subtask (for cleanup)


Output = tuple[list[Any], list[int]]


class RuntimeOperator:
    """One operator of a chain."""

    #: The keyed state of this operator subtask (keyed operators only).
    backend: KeyedStateBackend | None = None
    #: Whether it has timers to fire (``on_watermark``/``on_processing_time``).
    has_timers = False

    def __init__(self, spec: OperatorSpec) -> None:
        self.spec = spec
        # Side-output records waiting to be routed: (tag, record, timestamp).
        self.side_records: list[tuple[str, Any, int]] = []
        # The operator's event time (the subtask's watermark).
        self.watermark = NO_WATERMARK
        # Records that came too late for every window they belong to.
        self.late_records = 0
        self.late_dropped = 0  # ... of which no side output took

    def _error(self, what: str, record: Any, exc: BaseException) -> RecordError:
        return RecordError(
            f"operator {self.spec.uid!r} ({self.spec.name}) {what} "
            f"{type(exc).__name__}: {exc} — on record {describe_record(record)}"
        )

    def open(self) -> None:
        """Called once before the first record."""

    async def initialize(self, restored: RestoredState | None) -> None:
        """Set up state: fresh (``restored`` is None) or from a checkpoint."""
        if self.backend is not None:
            await self.backend.open()
            if restored is not None:
                await self.backend.restore(restored.keyed_files, restored.key_groups)

    def process(self, batch: list[Any]) -> list[Any]:
        """Records in, records out."""
        raise NotImplementedError

    def process_timed(self, batch: list[Any], stamps: list[int]) -> Output:
        """Records with event timestamps in, records with timestamps out. The default
        suits operators that emit exactly one record per input record."""
        return self.process(batch), stamps

    async def on_watermark(self, watermark: int) -> Output:
        """Event time reached ``watermark``: fire the timers it passed."""
        self.watermark = watermark
        return [], []

    async def on_processing_time(self, now_ms: int) -> Output:
        """The clock reached ``now_ms``: fire the processing-time timers due."""
        return [], []

    def next_processing_time(self) -> int | None:
        """When the earliest processing-time timer is due (None: none)."""
        return None

    def keys_of(self, batch: list[Any]) -> list[Any]:
        """The state keys a batch touches (keyed operators; for backends doing I/O)."""
        return []

    def snapshot_state(self, checkpoint_id: int) -> dict[str, list[Any]]:
        """List state to checkpoint, taken at the barrier (on the event loop)."""
        return {}

    @property
    def stateful(self) -> bool:
        """Whether checkpoints hold something for this operator."""
        return self.backend is not None

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` (and every one before it) completed."""

    async def finish(self) -> list[Any]:
        """End of input: records still to emit."""
        return []

    def close(self) -> None:
        """Called once at the end, also after a failure or cancellation."""

    async def close_state(self) -> None:
        """Release the state backend."""
        if self.backend is not None:
            await self.backend.close()


def _pair_key(pair: list[Any]) -> Any:
    """The state key of a ``[key, partial]`` pair from a combining producer."""
    key = pair[0]
    return canonical_key(key) if type(key) is list else key


class KeyedOperator(RuntimeOperator):
    """Base of keyed operators; built-in aggregations keep one value per key in ``state``."""

    def __init__(
        self, spec: OperatorSpec, key_fn: Callable[[Any], Any], backend: KeyedStateBackend
    ) -> None:
        super().__init__(spec)
        self.key_fn = key_fn
        self.backend = backend
        # key -> accumulated value: the live table (memory) or the cache (sqlite).
        self.state: dict[Any, Any] = backend.table("value")
        # Built-in aggregations: emit only each key's final value, at the end of input.
        self.emit_final = spec.description.get("emit") == "final"
        # ... and take [key, partial] pairs from combining producers (batch mode; see
        # ``mesh.node.operators.combine``).
        self.combined = bool(spec.description.get("combined"))

    def _merge_partials(self, batch: list[Any], merge: Callable[[Any, Any], Any]) -> list[Any]:
        """Fold ``[key, partial]`` pairs into ``state`` with ``merge(value, partial)``."""
        state = self.state
        detach = self.backend.detach if self.backend is not None else (lambda v: v)
        for pair in batch:
            try:
                key, partial = _pair_key(pair), pair[1]
                state[key] = merge(detach(state[key]), partial) if key in state else partial
            except UserCodeError as exc:
                raise self._error("could not merge a partial value:", pair, exc) from exc
        return []

    async def _final_values(self) -> list[tuple[Any, Any]]:
        """Every (key, value) of ``state``, also those only on disk (sqlite), taken out:
        a checkpoint taken after they were emitted must not emit them again when it is
        restored (the sink's transaction holds them by then)."""
        assert self.backend is not None
        values = await self.backend.scan("value")
        await self.backend.clear("value")
        return values

    def keys_of(self, batch: list[Any]) -> list[Any]:
        # A hint of which keys to load: a record whose key cannot be made fails (or
        # becomes a dead letter) when it is processed.
        if self.combined:  # [key, partial] pairs
            return [_pair_key(pair) for pair in batch if type(pair) is list and pair]
        keys = []
        for record in batch:
            try:
                keys.append(self._key(record))
            except RecordError:
                pass
        return keys

    def _resume_per_record(
        self,
        batch: list[Any],
        out: list[Any],
        apply: Callable[[Any], tuple[Any, Any, Any]],
    ) -> list[Any]:
        """After a built-in aggregation's fast loop raised: everything before the failing
        record was applied (its state is written only once nothing can raise), so go on
        record by record from ``batch[len(out)]``. ``apply(record)`` gives (key, new
        value, output) or raises a RecordError naming the record, which becomes a
        RecordFailure with the output so far."""
        state = self.state
        for record in batch[len(out) :]:
            try:
                key, value, emitted = apply(record)
            except RecordError as error:
                raise RecordFailure(error, len(out), out) from error.__cause__
            state[key] = value
            out.append(emitted)
        return out

    def _key(self, record: Any) -> Any:
        """The state key of ``record`` (lists become tuples); errors name the record."""
        try:
            key = self.key_fn(record)
        except UserCodeError as exc:
            raise self._error("key_by function raised", record, exc) from exc
        try:
            hash(key)
            return key
        except TypeError:
            pass
        try:
            return canonical_key(key)
        except TypeError as exc:
            raise self._error("key_by function gave an unusable key:", record, exc) from exc
