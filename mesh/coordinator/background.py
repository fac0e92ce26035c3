"""Work a coordinator collaborator starts and does not wait for (reading a restore point
off the event loop), run in the daemon's task group so it ends with the daemon."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVarTuple, Unpack

import anyio.abc

__all__ = ["BackgroundTasks"]

Args = TypeVarTuple("Args")


class BackgroundTasks:
    """Starts coroutines in the daemon's task group once the daemon runs."""

    def __init__(self) -> None:
        self._tg: anyio.abc.TaskGroup | None = None

    def attach(self, tg: anyio.abc.TaskGroup) -> None:
        """Start tasks in ``tg`` from now on."""
        self._tg = tg

    def start_soon(
        self, fn: Callable[[Unpack[Args]], Coroutine[Any, Any, Any]], *args: *Args
    ) -> None:
        """Run ``fn(*args)`` beside the daemon's other tasks."""
        assert self._tg is not None, "the coordinator is not running"
        self._tg.start_soon(fn, *args)
