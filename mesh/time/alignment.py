"""Watermark alignment: how far ahead of the slowest member of its group a source
subtask may read.

An ``AlignmentGroup`` holds the latest watermark each member (a source subtask) reported,
and whether it is idle or finished. Its ``bound`` is the smallest watermark among the
members that still count — active and not finished — plus the group's ``max_drift_ms``:
a member whose watermark is above the bound stops reading until the bound rises past it.
With no member counting (all idle or finished) there is no bound (``None``).

A member that has not reported yet counts with no watermark at all, so until every
member has read something, the bound holds the others at the start: that is what keeps
a slow starter from being left behind. Pure: no clock, no network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mesh.time.watermarks import NO_WATERMARK

__all__ = ["AlignmentGroup"]


@dataclass(slots=True)
class _Member:
    watermark: int = NO_WATERMARK
    idle: bool = False
    ended: bool = False


class AlignmentGroup:
    """The members of one alignment group and the bound they give each other."""

    def __init__(self, members: Iterable[str], max_drift_ms: int) -> None:
        if max_drift_ms <= 0:
            raise ValueError(f"max_drift_ms must be above zero, got {max_drift_ms}")
        self.max_drift_ms = max_drift_ms
        self._members = {name: _Member() for name in members}
        if not self._members:
            raise ValueError("an alignment group needs members")
        self.bound: int | None = self._compute()

    @property
    def members(self) -> list[str]:
        """The members' names."""
        return list(self._members)

    def update(self, member: str, watermark: int, *, idle: bool, ended: bool) -> bool:
        """A member reported; returns whether ``bound`` changed. Watermarks only go up
        (an older, smaller report is ignored); a finished member stays finished.

        Raises KeyError for a member the group does not have.
        """
        state = self._members[member]
        state.watermark = max(state.watermark, watermark)
        state.idle = idle
        state.ended = state.ended or ended
        bound = self._compute()
        changed = bound != self.bound
        self.bound = bound
        return changed

    def _compute(self) -> int | None:
        counting = [m.watermark for m in self._members.values() if not (m.idle or m.ended)]
        if not counting:
            return None
        return min(counting) + self.max_drift_ms
