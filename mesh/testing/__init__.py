"""Tools for testing mesh and jobs on mesh: a whole cluster inside one event loop.

``InProcessCluster`` runs a coordinator and N nodes as tasks of the caller's event loop,
over real ZeroMQ sockets on 127.0.0.1. Nothing in mesh outside this package imports it.
"""

from __future__ import annotations

from mesh.testing.cluster import InProcessCluster, InProcessNode

__all__ = ["InProcessCluster", "InProcessNode"]
