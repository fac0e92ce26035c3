"""Tools for testing mesh and jobs on mesh: a whole cluster inside one event loop, and
one subtask driven by hand.

``InProcessCluster`` runs a coordinator and N nodes as tasks of the caller's event loop,
over real ZeroMQ sockets on 127.0.0.1; ``runner.standalone_runner`` wires a single
``SubtaskRunner`` from keywords. Nothing in mesh outside this package imports it.
"""

from __future__ import annotations

from mesh.testing.cluster import InProcessCluster, InProcessNode

__all__ = ["InProcessCluster", "InProcessNode"]
