"""Records and user code: naming the record at fault, dead letters, encoding.

Operators, sinks and output edges run user functions over whole batches; when one
raises, these helpers find the record at fault (``first_failure``), describe it safely
(``describe_record``), and carry what was made before it (``RecordFailure``) so the
subtask can set the record aside as a dead letter (``dead_letter``). ``encode_batch``
and ``encode_lines`` encode records with errors that name the operator.
"""

from __future__ import annotations

import io
import reprlib
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from mesh.errors import EncodingError, RecordError, UndecodableInput
from mesh.graph.logical import OperatorSpec
from mesh.transport import batches

__all__ = [
    "RecordFailure",
    "UserCodeError",
    "dead_letter",
    "describe_record",
    "encode_batch",
    "encode_lines",
    "first_failure",
]

#: What user code may raise that fails its task (SystemExit included: a job must not
#: stop its node); KeyboardInterrupt and cancellation still propagate.
UserCodeError = (Exception, SystemExit)
_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxdict = 8
_repr.maxlist = 8


def first_failure(
    fn: Callable[[Any], Any], items: Iterable[Any]
) -> tuple[Any, BaseException] | None:
    """Replay ``fn`` item by item: the first item it raises on, with the exception.

    Batch code runs fast comprehensions; when one raises, this finds the culprit so the
    error can name it.
    """
    for item in items:
        try:
            fn(item)
        except UserCodeError as exc:
            return item, exc
    return None


class RecordFailure(RecordError):
    """User code raised on ``batch[index]``; ``output`` is what the records before it made.

    An operator raises it after applying the records before the failing one (their state
    updates stay), so the caller may set the record aside as a dead letter, pass
    ``output`` on, and go on with ``batch[index + 1:]``.
    """

    def __init__(
        self,
        error: RecordError,
        index: int,
        output: list[Any],
        stamps: list[int] | None = None,
    ) -> None:
        super().__init__(str(error))
        self.index = index
        self.output = output
        # The timestamps of ``output`` (None: one output per input record, so the
        # timestamps of the records before ``index``).
        self.stamps = stamps
        self.__cause__ = error.__cause__ or error


def dead_letter(spec: OperatorSpec, subtask: int, record: Any, failure: RecordFailure) -> Any:
    """What a dead-letter sink receives for a record that made user code raise."""
    cause = failure.__cause__ or failure
    try:
        _dumps(record)
    except TypeError:  # made by a chained operator, never encoded: keep what can be shown
        record = describe_record(record)
    letter = {
        "operator": spec.uid,
        "name": spec.name,
        "subtask": subtask,
        "error": str(failure),
        "traceback": "".join(traceback.format_exception(cause)).rstrip(),
        "record": record,
    }
    if isinstance(cause, UndecodableInput):  # where the source read it
        letter["origin"] = cause.origin
    return letter


def describe_record(record: Any) -> str:
    """A short, safe rendering of a record for error messages."""
    try:
        return _repr.repr(record)
    except UserCodeError:
        return f"<{type(record).__name__}>"


def _encoding_error(
    spec: OperatorSpec, batch: list[Any], exc: Exception, verb: str
) -> EncodingError:
    found = first_failure(_dumps, batch)
    if found is None:
        return EncodingError(f"operator {spec.uid!r} ({spec.name}): cannot encode records: {exc}")
    record, inner = found
    return EncodingError(
        f"operator {spec.uid!r} ({spec.name}) {verb} a record of type "
        f"{type(record).__name__} that cannot be encoded as JSON: {inner}"
    )


def encode_batch(spec: OperatorSpec, batch: list[Any], stamps: list[int] | None = None) -> bytes:
    """``batch`` in the batch wire format (``mesh.transport.batches``), with its event
    ``stamps`` if it has any; EncodingError names ``spec`` and the record's type."""
    try:
        return batches.encode_batch(batch, stamps)
    except TypeError as exc:
        raise _encoding_error(spec, batch, exc, "emitted") from None


def encode_lines(spec: OperatorSpec, batch: list[Any]) -> bytes:
    """``batch`` as JSON lines; EncodingError names ``spec`` and the record's type."""
    # Each line goes into the buffer as soon as it is made and is freed before the next
    # one: orjson makes a line in a buffer far larger than the line, then shrinks it, and
    # with every line kept for a join each such buffer is a fresh heap allocation, which
    # costs several times the encoding.
    out = io.BytesIO()
    write = out.write
    try:
        for record in batch:
            write(_dumps(record, option=_NEWLINE))
        return out.getvalue()
    except TypeError as exc:
        raise _encoding_error(spec, batch, exc, "received") from None
