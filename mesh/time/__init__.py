"""Time: clocks and durations. Knows nothing of the network or of jobs."""

from mesh.time.clock import Clock, ManualClock, SystemClock
from mesh.time.durations import format_duration, parse_duration

__all__ = ["Clock", "ManualClock", "SystemClock", "format_duration", "parse_duration"]
