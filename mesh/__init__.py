"""mesh: a distributed stream processor for Python, in the spirit of Apache Flink.

A job is a Python file that builds a ``Job``::

    from mesh import Job, sinks, sources

    job = Job("wordcount", parallelism=2)
    lines = job.source(sources.TextFile("examples/data/*.txt"))
    lines.flat_map(str.split).key_by(lambda w: w).count().sink(sinks.JsonLines("out"))

and ``mesh run job.py`` runs it on a local cluster.
"""

from mesh._version import __version__
from mesh.api import (
    KeyedStream,
    RestartStrategy,
    Stream,
    StreamSink,
    WatermarkStrategy,
    WindowedStream,
    sinks,
    sources,
    triggers,
    windows,
)
from mesh.api.functions import Aggregate, KeyedProcessFunction, ProcessFunction
from mesh.api.job import Job
from mesh.errors import (
    ConfigError,
    EncodingError,
    GraphError,
    JobCodeError,
    JobFailed,
    MeshError,
    RecordError,
)

__all__ = [
    "Aggregate",
    "ConfigError",
    "EncodingError",
    "GraphError",
    "Job",
    "JobCodeError",
    "JobFailed",
    "KeyedProcessFunction",
    "KeyedStream",
    "MeshError",
    "ProcessFunction",
    "RecordError",
    "RestartStrategy",
    "Stream",
    "StreamSink",
    "WatermarkStrategy",
    "WindowedStream",
    "__version__",
    "sinks",
    "sources",
    "triggers",
    "windows",
]
