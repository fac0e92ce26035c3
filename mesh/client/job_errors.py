"""One line saying why a job file could not be turned into a graph (pure).

``JobCodeError`` carries the whole traceback of the import for ``mesh run`` and
``mesh submit``; commands that only look at a job (``mesh plan``) say it in one line:
the file, the line of it that raised (when the traceback reaches it) and the
exception.
"""

from __future__ import annotations

import traceback
from pathlib import Path

__all__ = ["job_file_error_line"]


def job_file_error_line(job_file: str | Path, exc: Exception) -> str:
    """``job file F[:line]: what went wrong`` — never more than one line."""
    path = Path(job_file)
    cause = exc.__cause__
    if isinstance(cause, BaseException):
        where = _line_in(path, cause)
        what = f"{type(cause).__name__}: {cause}".splitlines()[0]
        return f"job file {path}{where}: {what}"
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if str(path) in message or str(path.resolve()) in message:
        return message
    return f"job file {path}: {message}"


def _line_in(path: Path, exc: BaseException) -> str:
    """``:N`` for the last frame of the traceback in ``path`` (empty if none is)."""
    target = path.resolve()
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == target and frame.lineno is not None:
            line = f":{frame.lineno}"
    if (
        not line
        and isinstance(exc, SyntaxError)
        and exc.lineno is not None
        and exc.filename
        and Path(exc.filename).resolve() == target
    ):
        line = f":{exc.lineno}"
    return line
