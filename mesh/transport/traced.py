"""DATA payloads that carry sampled records' trace context.

A sampled record (``Job(trace_sample=...)``) keeps its trace across channels: the
buffer it travels in is a ``TracedPayload``, the same bytes plus, per sampled record
run in the buffer, the trace context it belongs to and the record indexes ``[start,
end)`` it covers. Within a node the object itself reaches the consumer; over the
network the marks ride in the frame header's extension (``{"trace": [[context, start,
end], ...]}``) and the receiver rebuilds the payload. Untraced buffers stay plain bytes,
so the common path pays one type check per buffer.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_TRACE_MARKS",
    "TraceMark",
    "TracedPayload",
    "marks_from_ext",
    "trace_ext",
]

#: A trace context (W3C fields) and the record indexes ``[start, end)`` it covers.
TraceMark = tuple[dict[str, str], int, int]

#: Sampled runs one buffer carries at most (more are not traced on this hop).
MAX_TRACE_MARKS = 16


class TracedPayload(bytes):
    """An encoded DATA buffer with the trace marks of the sampled records in it."""

    marks: list[TraceMark]

    @classmethod
    def of(cls, payload: bytes | memoryview, marks: list[TraceMark]) -> TracedPayload:
        """``payload`` carrying ``marks``."""
        traced = cls(payload)
        traced.marks = marks
        return traced


def trace_ext(payload: bytes) -> dict[str, Any] | None:
    """The header extension that carries ``payload``'s marks (None: an untraced one)."""
    if type(payload) is not TracedPayload:
        return None
    return {"trace": [[context, start, end] for context, start, end in payload.marks]}


def marks_from_ext(ext: dict[str, Any]) -> list[TraceMark] | None:
    """The trace marks of a received header extension; None if it has none.

    Raises ValueError saying what is wrong with marks that are malformed.
    """
    raw = ext.get("trace")
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_TRACE_MARKS:
        raise ValueError(f"'trace' must be a list of at most {MAX_TRACE_MARKS} marks")
    marks: list[TraceMark] = []
    for mark in raw:
        if not (isinstance(mark, list) and len(mark) == 3):
            raise ValueError("a trace mark must be [context, start, end]")
        context, start, end = mark
        if not isinstance(context, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in context.items()
        ):
            raise ValueError("a trace mark's context must map strings to strings")
        if not (type(start) is int and type(end) is int and 0 <= start < end):
            raise ValueError(f"a trace mark's record range [{start!r}, {end!r}) is not valid")
        marks.append((context, start, end))
    return marks
