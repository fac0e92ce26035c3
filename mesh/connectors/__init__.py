"""Write your own sources and sinks: the API every mesh connector is built on.

``Source`` and ``Sink`` are the descriptions a job file builds; on the node each subtask
gets a ``SourceReader``, or a ``SinkWriter`` and (exactly-once sinks) a ``Committer``,
with a ``TaskContext`` saying where it runs. ``docs/connectors.md`` shows a complete
example.
"""

from mesh.connectors.base import (
    Committer,
    RestoredSplits,
    Sink,
    SinkWriter,
    Source,
    SourceReader,
    Split,
)
from mesh.connectors.context import TaskContext
from mesh.connectors.transactions import TransactionNames, transaction_pattern
from mesh.errors import UndecodableInput

__all__ = [
    "Committer",
    "RestoredSplits",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceReader",
    "Split",
    "TaskContext",
    "TransactionNames",
    "UndecodableInput",
    "transaction_pattern",
]
