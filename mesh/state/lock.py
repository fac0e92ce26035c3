"""One daemon per state directory: an exclusive lock on ``STATE_DIR/.lock``.

Two daemons on one state directory would both write its databases and lose each other's
records. A daemon takes an ``flock`` on ``STATE_DIR/.lock`` when it starts and holds it
for its lifetime, with its pid written inside (for the error a second daemon shows).
The kernel releases the lock when the holder's process ends, however it ends, so a
lock left by a killed daemon is simply free again: the pid in the file is informative
only, never trusted.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from mesh.errors import StateError

__all__ = ["LOCK_FILE", "StateDirLock", "StateDirLocked", "holder_pid"]

LOCK_FILE = ".lock"


class StateDirLocked(StateError):
    """Another live process holds the state directory."""

    def __init__(self, directory: Path, role: str, holder: int | None) -> None:
        who = f"pid {holder}" if holder is not None else "a process whose pid is unknown"
        super().__init__(
            f"state directory {directory} is in use by another mesh daemon ({who}); "
            f"stop it or give this {role} another --state-dir"
        )
        self.holder = holder


def holder_pid(text: str) -> int | None:
    """The pid a lock file names (None if it names none)."""
    first = text.strip().split("\n", 1)[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


class StateDirLock:
    """The held lock of one state directory; ``release`` (or leaving the ``with``) frees it."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path, role: str) -> StateDirLock:
        """Lock ``directory`` (created if missing) for this process.

        Raises StateDirLocked naming the holder's pid if another process holds it, and
        StateError if the lock file cannot be opened.
        """
        path = directory / LOCK_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"cannot lock state directory {directory}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = holder_pid(os.pread(fd, 64, 0).decode("ascii", "replace"))
            finally:
                os.close(fd)
            raise StateDirLocked(directory, role, holder) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock state directory {directory}: {exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(directory, fd)

    def release(self) -> None:
        """Free the directory (idempotent); the file stays, with no lock on it."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> StateDirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
