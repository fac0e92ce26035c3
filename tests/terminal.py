"""Run a command on a pseudo-terminal and see its output as a person would: a small
terminal emulator for what progress displays emit (``pyte`` is not a dependency).

``Screen`` understands printable text, ``\\r``, ``\\n`` (a new line at column 0, as
a terminal with the default ONLCR setting shows it), ``\\b`` and the CSI sequences
that move the cursor (``A B C D G H f``) and erase (``K J``); it ignores colours and
modes (``m``, ``?25l``...) and OSC strings. Lines never scroll away: ``lines`` is the
whole screen from the first line written.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass, field

_CSI = re.compile(r"\x1b\[([?0-9;]*)([@-~])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


@dataclass
class Screen:
    """A terminal ``width`` columns wide that keeps every line."""

    width: int = 120
    rows: list[list[str]] = field(default_factory=lambda: [[]])
    row: int = 0
    col: int = 0

    def feed(self, text: str) -> None:
        """Interpret ``text`` as a terminal would."""
        text = _OSC.sub("", text)
        i = 0
        while i < len(text):
            match = _CSI.match(text, i)
            if match:
                self._csi(match.group(1), match.group(2))
                i = match.end()
                continue
            ch = text[i]
            i += 1
            if ch == "\r":
                self.col = 0
            elif ch == "\n":  # as a tty with ONLCR (the default) shows it
                self._move_to(self.row + 1, 0)
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch == "\x1b" or ord(ch) < 32:
                continue  # another escape or control character: not drawn
            else:
                if self.col >= self.width:
                    self._move_to(self.row + 1, 0)
                line = self.rows[self.row]
                line.extend(" " * (self.col - len(line) + 1))
                line[self.col] = ch
                self.col += 1

    @property
    def lines(self) -> list[str]:
        """The screen's lines, trailing spaces and trailing empty lines dropped."""
        lines = ["".join(row).rstrip() for row in self.rows]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def _move_to(self, row: int, col: int) -> None:
        self.row = max(0, row)
        while len(self.rows) <= self.row:
            self.rows.append([])
        self.col = max(0, min(col, self.width))

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # private modes (cursor visibility, ...)
        numbers = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        line = self.rows[self.row]
        if final == "A":
            self._move_to(self.row - max(n, 1), self.col)
        elif final == "B":
            self._move_to(self.row + max(n, 1), self.col)
        elif final == "C":
            self._move_to(self.row, self.col + max(n, 1))
        elif final == "D":
            self._move_to(self.row, self.col - max(n, 1))
        elif final == "G":
            self._move_to(self.row, max(n, 1) - 1)
        elif final in "Hf":
            col = numbers[1] if len(numbers) > 1 else 1
            self._move_to(max(n, 1) - 1, max(col, 1) - 1)
        elif final == "K":
            if n == 0:
                del line[self.col :]
            elif n == 1:
                line[: self.col + 1] = [" "] * min(len(line), self.col + 1)
            else:
                line.clear()
        elif final == "J":
            if n == 0:
                del line[self.col :]
                del self.rows[self.row + 1 :]
            else:
                self.rows = [[] for _ in self.rows]


def run_on_terminal(
    args: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    timeout_s: float,
    columns: int = 120,
) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as its stdin, stdout and stderr; returns its
    exit code and everything it wrote. The process (and its session) is killed if it
    outlives ``timeout_s``."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env={**env, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{args} did not end within {timeout_s:g} s; it wrote:\n"
                    + output.decode(errors="replace")[-3000:]
                )
            readable, _, _ = select.select([controller], [], [], min(remaining, 1.0))
            if readable:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    chunk = b""
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), output.decode(
            errors="replace"
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(controller)
