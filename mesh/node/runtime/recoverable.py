"""Which subtask failures a restart can fix.

A restart redeploys the same code with the same settings on the same kind of machine,
so some failures are bound to happen again: the job's configuration or graph is wrong
(``ConfigError``, ``GraphError``, ``JobCodeError``: a sink whose directory is a file
raises ``GraphError`` when it opens), or the file system refuses for a reason that
restarting does not change (``PermissionError``, ``NotADirectoryError``,
``IsADirectoryError``). Such a failure is *non-recoverable*: the coordinator fails the
job at once, whatever its restart strategy (like Flink's ``SuppressRestartsException``).
Everything else — a lost peer, a full disk, a broken channel — is recoverable, and the
strategy decides. So is whatever user code raises on a record (a ``RecordError``,
whatever it wraps, even a ``PermissionError``): the job's own functions may fail for
reasons of their own that pass, and the strategy is how a job's author says how long
to keep trying.

The error and every error it was explicitly raised from (``raise ... from exc``, and
the members of an exception group) are looked at, up to a ``RecordError``; an error
merely being handled when another one happened (``__context__``) is not a cause and
does not count.
"""

from __future__ import annotations

from mesh.errors import ConfigError, GraphError, JobCodeError, RecordError

__all__ = ["NON_RECOVERABLE", "non_recoverable_cause"]

#: The error types no restart can fix.
NON_RECOVERABLE: tuple[type[BaseException], ...] = (
    ConfigError,
    GraphError,
    JobCodeError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
)

# How deep a chain of causes is followed (a cycle or a silly chain ends there).
_MAX_DEPTH = 32


def non_recoverable_cause(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s causes that no restart can fix, or None if a restart may."""
    pending: list[tuple[BaseException, int]] = [(exc, 0)]
    seen: set[int] = set()
    while pending:
        error, depth = pending.pop()
        if id(error) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(error))
        if isinstance(error, NON_RECOVERABLE):
            return error
        if isinstance(error, RecordError):
            continue  # user code failed on a record: the restart strategy decides
        if isinstance(error, BaseExceptionGroup):
            pending.extend((member, depth + 1) for member in error.exceptions)
        if error.__cause__ is not None:
            pending.append((error.__cause__, depth + 1))
    return None
