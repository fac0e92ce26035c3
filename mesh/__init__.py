"""mesh: a distributed stream processor for Python, in the spirit of Apache Flink.

A job is a Python file that builds a ``Job``::

    from mesh import Job, sinks, sources

    job = Job("wordcount", parallelism=2)
    lines = job.source(sources.TextFile("examples/data/*.txt"))
    lines.flat_map(str.split).key_by(lambda w: w).count().sink(sinks.JsonLines("out"))

and ``mesh run job.py`` runs it on a local cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh._version import __version__

if TYPE_CHECKING:
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

# Where each public name lives. They are imported on first use, so that a command that
# needs none of the API (``mesh --version``, the daemons before a job arrives) does not
# pay for importing all of it.
_HOMES = {
    **dict.fromkeys(
        [
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
        ],
        "mesh.api",
    ),
    **dict.fromkeys(["Aggregate", "KeyedProcessFunction", "ProcessFunction"], "mesh.api.functions"),
    "Job": "mesh.api.job",
    **dict.fromkeys(
        [
            "ConfigError",
            "EncodingError",
            "GraphError",
            "JobCodeError",
            "JobFailed",
            "MeshError",
            "RecordError",
        ],
        "mesh.errors",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mesh' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # next time, a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


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
