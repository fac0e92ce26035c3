"""What users import: the job builder, sources and sinks. No sockets or files here."""

from mesh.api import sinks, sources
from mesh.api.job import Job
from mesh.api.restart import RestartStrategy
from mesh.api.streams import KeyedStream, Stream, StreamSink

__all__ = ["Job", "KeyedStream", "RestartStrategy", "Stream", "StreamSink", "sinks", "sources"]
