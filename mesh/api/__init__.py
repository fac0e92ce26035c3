"""What users import: the job builder, sources and sinks. No sockets or files here."""

from mesh.api import sinks, sources, triggers, windows
from mesh.api.job import Job
from mesh.api.restart import RestartStrategy
from mesh.api.streams import KeyedStream, Stream, StreamSink
from mesh.api.watermarks import WatermarkStrategy
from mesh.api.windowed import WindowedStream

__all__ = [
    "Job",
    "KeyedStream",
    "RestartStrategy",
    "Stream",
    "StreamSink",
    "WatermarkStrategy",
    "WindowedStream",
    "sinks",
    "sources",
    "triggers",
    "windows",
]
