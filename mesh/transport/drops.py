"""Counting what a daemon drops from the wire, and logging it without flooding the log."""

from __future__ import annotations

import logging
from collections import Counter

__all__ = ["DropCounter"]


class DropCounter:
    """Counts dropped messages by reason; logs the first 20 of each reason, then every 1000th."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        # Dropped messages per reason ("malformed", "unknown_job", ...).
        self.counts: Counter[str] = Counter()

    def drop(self, reason: str, detail: str, *, expected: bool = False) -> None:
        """Count one dropped message and maybe log why (``expected`` ones are only counted)."""
        self.counts[reason] += 1
        count = self.counts[reason]
        if not expected and (count <= 20 or count % 1000 == 0):
            self._log.warning("dropped a message (%s, #%d): %s", reason, count, detail)

    @property
    def total(self) -> int:
        """Messages dropped for any reason."""
        return sum(self.counts.values())
