"""The ``mesh`` command line.

Exit codes: 0 success, 1 the job failed (or a daemon could not run), 2 a usage,
configuration or job-file error, 130 interrupted.

The typer app (``mesh.commands.app``) is built on first use: ``mesh --version`` answers
without importing typer or any command, and so do the daemons when started with plain
flags (``mesh.commands.daemon_main``).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["main"]  # and ``app``, on first use


def main() -> None:
    """The console script."""
    if sys.argv[1:] == ["--version"]:
        from mesh._version import __version__

        print(f"mesh {__version__}")
        return
    if sys.argv[1:2] in (["coordinator"], ["node"]):
        from mesh.commands.daemon_main import main as run_daemon

        if run_daemon(sys.argv[1], sys.argv[2:]):
            return
    if sys.argv[1:2] == ["run"] and "--help" not in sys.argv:
        # forked before anything is imported here: it imports the daemons meanwhile
        from mesh.client.launcher import start_early_launcher

        start_early_launcher()
    from mesh.commands.app import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from mesh.commands.app import app

        return app
    raise AttributeError(f"module 'mesh.cli' has no attribute {name!r}")
