"""Trace ids on log records: a log line written inside a traced span names its trace."""

from __future__ import annotations

import logging

from opentelemetry import trace

__all__ = ["TraceIdFilter"]


class TraceIdFilter(logging.Filter):
    """Sets ``trace_id`` and ``span_id`` (hex) on every record logged while a recording
    span is current, and empty strings otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True
