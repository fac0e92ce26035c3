"""Exit codes and the one-line error a command exits with; free of typer, so that the
daemons' own entry (``mesh.commands.daemon_main``) can use them without importing it."""

from __future__ import annotations

import sys

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "err", "fail"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def err(message: str) -> None:
    """Say ``message`` on stderr."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int) -> SystemExit:
    """Say ``error: message`` on stderr; the exit to raise (typer passes it through)."""
    err(f"error: {message}")
    return SystemExit(code)
