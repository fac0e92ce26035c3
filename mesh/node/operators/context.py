"""The runtime facts of a subtask: ``mesh.connectors.context.TaskContext``, re-exported
for the node's operators."""

from mesh.connectors.context import TaskContext

__all__ = ["TaskContext"]
