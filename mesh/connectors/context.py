"""What an operator, source reader or sink writer knows about where it runs.

Part of the public connector API (``mesh.connectors``): a reader or writer gets one when
it is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # job files import the connector API: keep it free of sockets and loops
    from mesh.time.clock import Clock
    from mesh.transport.sockets import SocketFactory

__all__ = ["TaskContext"]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The runtime facts of one subtask: which job, attempt and node, which subtask of how
    many, the clock, and where relative paths resolve."""

    job_id: str
    attempt: int
    node_id: str
    task_name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int
    base_dir: Path  # relative paths in the job resolve against this
    clock: Clock
    # Sends encoded records to the client (Collect sinks); None outside a cluster.
    collect: Callable[[bytes], None] | None = None
    # Where connectors get their sockets (ZmqPull, ZmqPush); None outside a node.
    sockets: SocketFactory | None = None
    #: The uid and name of the source or sink this context was made for ("" elsewhere).
    operator_uid: str = ""
    operator_name: str = ""

    @property
    def subtask(self) -> str:
        """``"index/parallelism"`` for people."""
        return f"{self.subtask_index + 1}/{self.parallelism}"

    def resolve(self, path: str) -> Path:
        """``path`` made absolute against the directory the job was submitted from."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p
