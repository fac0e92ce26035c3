"""Unwrapping exception groups where errors leave a task group."""

from __future__ import annotations

__all__ = ["unwrap"]


def unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-member groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
