"""Logging for daemons and the CLI: plain lines on stderr (journald-friendly), or one
JSON object per line (``--log-format json``). A record logged inside a traced span
carries its trace and span ids (``trace_id``/``span_id`` in JSON, ``trace=`` in text)."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["LOG_FORMATS", "JsonFormatter", "setup_logging"]

#: The formats ``--log-format`` takes.
LOG_FORMATS = ("text", "json")


class _TextFormatter(logging.Formatter):
    """The plain format, with the trace ids appended when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line += f" trace={trace_id} span={getattr(record, 'span_id', '')}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, role, logger, message, and the trace and
    span ids and the traceback when there are any."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", "")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(
    level: str = "info",
    *,
    role: str = "mesh",
    log_format: str = "text",
    trace_ids: logging.Filter | None = None,
) -> None:
    """Log to stderr; under systemd's journal the timestamp is left to journald.
    ``trace_ids`` (from ``mesh.telemetry``) adds the current span's ids to records."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(role))
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_TextFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)-7s {role} %(name)s: %(message)s")
        )
    if trace_ids is not None:
        handler.addFilter(trace_ids)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
