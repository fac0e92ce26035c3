"""Showing changing text on a terminal or a pipe: ``mesh run``'s progress line and
``mesh status --watch``.

On a terminal a display is refreshed in place with rich's ``Live`` (one line for
``mesh run``, with a bar when the input's size is known; the whole status for
``--watch``); on a pipe or a file it prints plain lines without escape codes — at the
start, every few seconds, when the job's state changes, and at the end — so a log
stays short and readable.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mesh.client.progress import PrintSchedule, Progress, progress_line

__all__ = ["ProgressDisplay", "TextDisplay"]

#: How often a plain display prints while nothing else changes.
PLAIN_EVERY_S = 5.0


class ProgressDisplay:
    """``mesh run``'s progress: one line refreshed in place on a terminal, plain lines
    on a pipe. ``show`` each new progress, ``close`` with the last one (it stays
    printed, with average rates)."""

    def __init__(self, stream: IO[str] | None = None, *, every_s: float = PLAIN_EVERY_S) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._schedule = PrintSchedule(every_s)
        self._live: Live | None = None
        if self._tty:
            console = Console(file=self._stream, highlight=False)
            self._live = Live(
                console=console,
                auto_refresh=False,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()

    @property
    def in_place(self) -> bool:
        """Whether the display refreshes one line in place (a terminal)."""
        return self._tty

    def show(self, progress: Progress) -> None:
        """Show the job's latest progress."""
        if self._live is not None:
            self._live.update(_progress_renderable(progress), refresh=True)
        elif self._schedule.due(progress.state, time.monotonic()):
            self._print(progress_line(progress))

    def message(self, text: str) -> None:
        """Print a line of its own (above the refreshed line on a terminal)."""
        if self._live is not None:
            self._live.console.print(Text(text))
        else:
            self._print(text)

    def close(self, final: Progress | None = None) -> None:
        """Stop refreshing; print ``final`` as a plain line that stays."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if final is not None:
            self._print(progress_line(final))

    def _print(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


def _progress_renderable(progress: Progress) -> Any:
    line = Text(progress_line(progress), no_wrap=True, overflow="ellipsis")
    if progress.fraction is None:
        return line
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=24, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(ProgressBar(total=1.0, completed=min(progress.fraction, 1.0), width=24), line)
    return grid


class TextDisplay:
    """``mesh status --watch``: the whole text refreshed in place on a terminal; on a
    pipe, printed again (after a blank line) at the start, every few seconds, on a state
    change and at the end."""

    def __init__(self, stream: IO[str] | None = None, *, every_s: float = PLAIN_EVERY_S) -> None:
        self._stream = stream or sys.stdout
        self._schedule = PrintSchedule(every_s)
        self._printed = False
        self._live: Live | None = None
        if self._stream.isatty():
            console = Console(file=self._stream, highlight=False)
            self._live = Live(console=console, auto_refresh=False, vertical_overflow="visible")
            self._live.start()

    def show(self, text: str, state: str, *, final: bool = False) -> None:
        """Show ``text`` (the status in ``state``); ``final``: the last one."""
        if self._live is not None:
            self._live.update(Group(Text(text)), refresh=True)
            return
        if self._schedule.due(state, time.monotonic(), final=final):
            self._stream.write(("\n" if self._printed else "") + text + "\n")
            self._stream.flush()
            self._printed = True

    def close(self) -> None:
        """Stop refreshing; what was shown last stays on the screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None
