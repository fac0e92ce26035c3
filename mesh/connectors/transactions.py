"""Names of a two-phase sink's transactions, and how to find them again in ``clean_up``.

Every transaction of sink subtask ``k`` of sink ``uid`` in job ``job`` is named
``<job>-<uid>-<k>-...``: ``<job>-<uid>-<k>-<checkpoint, 6 digits>`` once sealed at a
checkpoint (or ``...-end`` at the end of a bounded input; that is the ``transaction``
``SinkWriter.prepare_commit`` gets), and ``<job>-<uid>-<k>-a<attempt>-<n>`` while
current (``TransactionNames.current``). ``transaction_pattern`` matches exactly these,
and never a sink whose uid extends this one's (``out`` and ``out-2``).
"""

from __future__ import annotations

import itertools
import re

from mesh.connectors.context import TaskContext

__all__ = ["TransactionNames", "transaction_pattern"]


class TransactionNames:
    """The names of one sink subtask's transactions."""

    def __init__(self, ctx: TaskContext, uid: str | None = None) -> None:
        #: ``<job>-<uid>-<subtask>``: what every name of this subtask starts with.
        self.owner = f"{ctx.job_id}-{uid or ctx.operator_uid}-{ctx.subtask_index}"
        self._attempt = ctx.attempt
        self._seq = itertools.count()

    def precommitted(self, checkpoint: int | str) -> str:
        """The name of the transaction sealed at ``checkpoint`` (or "end")."""
        txn = f"{checkpoint:06d}" if isinstance(checkpoint, int) else checkpoint
        return f"{self.owner}-{txn}"

    def current(self) -> str:
        """A name for a new current transaction, unique to this attempt of the subtask."""
        return f"{self.owner}-a{self._attempt}-{next(self._seq)}"


def transaction_pattern(
    job: str, uid: str, *tails: str, subtask: int | None = None
) -> re.Pattern[str]:
    """Names of transactions of sink ``uid`` of job ``job``: ``<job>-<uid>-<subtask><tail>``
    for one of the regular expressions ``tails`` (of any subtask, or only of
    ``subtask``), anchored on both ends."""
    alternatives = "|".join(tails)
    index = r"\d+" if subtask is None else str(subtask)
    return re.compile(rf"^{re.escape(job)}-{re.escape(uid)}-{index}(?:{alternatives})$")
