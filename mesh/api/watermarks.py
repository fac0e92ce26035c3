"""``WatermarkStrategy``: how a source tells event time.

Give it to ``job.source(..., watermarks=...)``::

    WatermarkStrategy.bounded(max_delay="2s", timestamp=lambda e: e["ts"], idle_timeout="10s")

``timestamp(record)`` returns the record's event time, an int of milliseconds. Each
source subtask sends a watermark every ``Job(watermark_interval=...)`` (200 ms by
default): the largest timestamp it has read, minus ``max_delay``, minus 1 ms — the
promise that no record at or before it is still to come. Records that arrive later
than that are *late* for the windows that already fired (see ``allowed_lateness``).
A subtask that reads nothing for ``idle_timeout`` is marked idle, so it does not hold
back event time downstream; it counts again as soon as it reads a record.

Sources whose strategies name the same ``align_group`` are kept within ``max_drift`` of
each other (watermark alignment): a source subtask whose watermark runs ahead of the
group's slowest by more than the drift stops reading until the slowest catches up, so
that windows downstream are not held open for the lagging one. Idle and finished
subtasks do not hold the group back; one that never reads (and has no
``idle_timeout``) does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.errors import GraphError
from mesh.time.durations import parse_duration

__all__ = ["WatermarkStrategy"]


def _ms(value: Any, what: str) -> int:
    try:
        return parse_duration(value, what=f"WatermarkStrategy {what}")
    except ValueError as exc:
        raise GraphError(str(exc)) from None


class WatermarkStrategy:
    """Timestamps and watermarks of a source (build it with ``bounded``)."""

    def __init__(
        self,
        *,
        max_delay_ms: int,
        timestamp: Callable[[Any], int],
        idle_timeout_ms: int | None,
        align_group: str | None = None,
        max_drift_ms: int | None = None,
    ) -> None:
        self.max_delay_ms = max_delay_ms
        self.timestamp = timestamp
        self.idle_timeout_ms = idle_timeout_ms
        self.align_group = align_group
        self.max_drift_ms = max_drift_ms

    @classmethod
    def bounded(
        cls,
        max_delay: int | str,
        timestamp: Callable[[Any], int],
        idle_timeout: int | str | None = None,
        *,
        align_group: str | None = None,
        max_drift: int | str | None = None,
    ) -> WatermarkStrategy:
        """Records arrive at most ``max_delay`` out of order; ``timestamp(record)`` is
        the record's event time in ms; a source subtask silent for ``idle_timeout``
        (default: never) stops holding back the watermark. Sources with the same
        ``align_group`` pause while their watermark is more than ``max_drift`` ahead of
        the group's slowest."""
        if not callable(timestamp):
            raise GraphError(
                "WatermarkStrategy.bounded(): timestamp must be a function record -> int ms, "
                f"got {timestamp!r}"
            )
        idle = None if idle_timeout is None else _ms(idle_timeout, "idle_timeout")
        if idle == 0:
            raise GraphError("WatermarkStrategy idle_timeout must be above zero (or None)")
        if (align_group is None) != (max_drift is None):
            raise GraphError(
                "WatermarkStrategy.bounded(): align_group and max_drift go together, got "
                f"align_group={align_group!r}, max_drift={max_drift!r}"
            )
        drift = None
        if align_group is not None:
            if not isinstance(align_group, str) or not align_group.strip():
                raise GraphError(
                    f"WatermarkStrategy align_group must be a non-empty string, got {align_group!r}"
                )
            drift = _ms(max_drift, "max_drift")
            if drift <= 0:
                raise GraphError(
                    f"WatermarkStrategy max_drift must be above zero, got {max_drift!r}"
                )
        return cls(
            max_delay_ms=_ms(max_delay, "max_delay"),
            timestamp=timestamp,
            idle_timeout_ms=idle,
            align_group=align_group,
            max_drift_ms=drift,
        )

    def describe(self) -> dict[str, Any]:
        """A JSON summary, for status output."""
        described: dict[str, Any] = {
            "max_delay_ms": self.max_delay_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
        }
        if self.align_group is not None:
            described["align_group"] = self.align_group
            described["max_drift_ms"] = self.max_drift_ms
        return described

    def __repr__(self) -> str:
        return (
            f"WatermarkStrategy.bounded(max_delay={self.max_delay_ms}, "
            f"idle_timeout={self.idle_timeout_ms}"
            + (
                f", align_group={self.align_group!r}, max_drift={self.max_drift_ms})"
                if self.align_group is not None
                else ")"
            )
        )
