"""A coordinator and N nodes as tasks of one event loop: a cluster for tests.

The daemons are the real ones (``Coordinator`` and ``Node``) talking over real ZeroMQ
sockets bound to ephemeral ports of 127.0.0.1, so a client reaches the cluster at
``cluster.address`` exactly as it reaches one of separate processes. What differs from
``LocalCluster`` (subprocesses) is only what a process gives: one pid, one ``sys.modules``,
one root logger, one environment. So:

* nothing here installs signal handlers or sets up logging (the daemons' loggers
  propagate to whatever the test runner captures), and ``os.environ`` is left alone;
* each node gets its own id (``node-1``, ``node-2``, ...), never reused, since the
  coordinator tells a restarted node from a retried registration by its pid, which all
  nodes here share;
* job modules the nodes import (``mesh_job_*``) are dropped from ``sys.modules`` when
  the cluster stops, and modules a node dropped that were loaded before the cluster
  started are put back;
* the coordinator closes its databases when it stops (``Coordinator.run`` does);
* fault points (``MESH_FAULTS``, ``mesh/faults.py``) kill the process that reaches them:
  here that would be the test runner, so a cluster refuses to start while a plan is set.
  Fault injection, ``kill -9`` and signals need ``LocalCluster``.

Use it as an async context manager, in the task that owns it::

    async with InProcessCluster(nodes=2, slots=2, state_dir=tmp_path) as cluster:
        async with open_client(cluster.address) as client:
            ...

Leaving the block stops every node (gracefully when the block ended normally: each tells
the coordinator it leaves, like ``SIGTERM`` does to a node process; at once when it
raised), then the coordinator, and closes every socket. A daemon that crashes fails the
block with its exception. With a ``ManualClock`` the coordinator's heartbeat monitor, its
ticker (scheduling, checkpoints, restarts) and the nodes' heartbeats only move when the
test advances the clock; ZeroMQ and request timeouts still use real time.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import anyio
import anyio.abc

from mesh import faults
from mesh.coordinator.daemon import Coordinator, CoordinatorConfig
from mesh.errors import MeshError
from mesh.node.daemon import Node, NodeConfig
from mesh.protocol.messages import PeerAddress
from mesh.time.clock import Clock
from mesh.transport.curve import Curve
from mesh.transport.keys import own_pair_names

__all__ = ["InProcessCluster", "InProcessNode"]

log = logging.getLogger("mesh.testing")

# Modules the loader creates for job files (mesh/api/loader.py).
_JOB_MODULE_PREFIX = "mesh_job_"


@dataclass(eq=False)
class InProcessNode:
    """One node of an ``InProcessCluster``."""

    name: str
    daemon: Node
    address: PeerAddress | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether the node's task is still serving."""
        return not self.done.is_set()


class InProcessCluster:
    """A coordinator and nodes as tasks of the current event loop (see the module doc)."""

    def __init__(
        self,
        *,
        nodes: int = 2,
        slots: int = 2,
        state_dir: str | Path,
        clock: Clock | None = None,
        heartbeat_interval_ms: int = 1000,
        heartbeat_timeout_ms: int = 5000,
        placement: str = "spread",
        slot_timeout_ms: int = 300_000,
        stop_timeout_s: float = 10.0,
        keys: str | Path | None = None,
        **coordinator_settings: Any,
    ) -> None:
        if nodes < 0:
            raise MeshError(f"an in-process cluster needs 0 or more nodes, got {nodes}")
        self.node_count = nodes
        self.slots = slots
        self.state_dir = Path(state_dir).resolve()
        self.clock = clock
        self.stop_timeout_s = stop_timeout_s
        # A keys directory (mesh keys generate): every daemon then uses CURVE.
        self.keys = Path(keys) if keys is not None else None
        if self.keys is not None:
            coordinator_settings.setdefault(
                "curve", Curve.load(self.keys, ["coordinator"], serve=True)
            )
        self.coordinator_config = CoordinatorConfig(
            bind="tcp://127.0.0.1:0",
            state_dir=self.state_dir / "coordinator",
            heartbeat_interval_ms=heartbeat_interval_ms,
            heartbeat_timeout_ms=heartbeat_timeout_ms,
            placement=placement,
            slot_timeout_ms=slot_timeout_ms,
            **coordinator_settings,
        )
        self.coordinator: Coordinator | None = None
        self.nodes: list[InProcessNode] = []
        self.address = ""
        self._node_counter = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._coordinator_scope = anyio.CancelScope()
        self._stack: contextlib.AsyncExitStack | None = None
        self._modules_before: dict[str, ModuleType] = {}
        self.started = False
        self.stopped = False

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> InProcessCluster:
        if self.started:
            raise MeshError("an InProcessCluster runs once; make a new one")
        if faults._PLAN:
            raise MeshError(
                "MESH_FAULTS is set: a fault point would kill this very process "
                "(the test runner); fault injection needs daemons in processes of their own"
            )
        self.started = True
        self._modules_before = dict(sys.modules)
        stack = contextlib.AsyncExitStack()
        self._stack = stack
        try:
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self.coordinator = Coordinator(self.coordinator_config, clock=self.clock)
            self.address = await self._tg.start(
                self._serve, "coordinator", self.coordinator.run, self._coordinator_scope
            )
            for _ in range(self.node_count):
                await self.add_node()
        except BaseException:
            await self._close(*sys.exc_info())
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if exc is None:
                # Nodes leave one by one, as LocalCluster.stop's SIGTERMs make them.
                with anyio.CancelScope(shield=True):
                    for node in self.nodes:
                        await self.stop_node(node)
        finally:
            closed = await self._close(exc_type, exc, tb)
        return closed

    async def _close(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Cancel every daemon, leave the task group (its sockets close as their tasks
        end), restore ``sys.modules``. An exception of the block propagates as it is (not
        wrapped in an exception group); a daemon's crash propagates as the task group's
        exception group."""
        if self.stopped:
            return None
        self.stopped = True
        for node in self.nodes:
            node.scope.cancel()
        self._coordinator_scope.cancel()
        assert self._stack is not None
        try:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                # Possibly the task group's own cancellation (a daemon crashed): it knows.
                return await self._stack.__aexit__(exc_type, exc, tb)
            await self._stack.__aexit__(None, None, None)
            return None
        finally:
            self._tg = None
            self._restore_modules()

    def _restore_modules(self) -> None:
        for name in [n for n in sys.modules if n.startswith(_JOB_MODULE_PREFIX)]:
            if name not in self._modules_before:
                del sys.modules[name]
        for name, module in self._modules_before.items():
            sys.modules.setdefault(name, module)
        self._modules_before = {}

    async def _serve(
        self,
        name: str,
        run: Any,
        scope: anyio.CancelScope,
        node: InProcessNode | None = None,
        *,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one daemon in ``scope`` (cancelled to stop it)."""
        try:
            with scope:
                await run(task_status=task_status)
            if not scope.cancel_called:
                raise MeshError(f"{name} stopped serving on its own")
        except BaseException as exc:
            if node is not None and not scope.cancel_called:
                node.error = exc
            raise
        finally:
            if node is not None:
                node.done.set()

    # -- nodes ----------------------------------------------------------------------------

    async def add_node(
        self, *, slots: int | None = None, keys: str | Path | None = None
    ) -> InProcessNode:
        """Start one more node (``node-<n>``); returns once it registered. ``keys``
        overrides the cluster's keys directory for this node."""
        if self._tg is None or self.stopped:
            raise MeshError("the cluster is not running")
        self._node_counter += 1
        name = f"node-{self._node_counter}"
        directory = Path(keys) if keys is not None else self.keys
        curve = (
            Curve.load(directory, own_pair_names("node", name), serve=True)
            if directory is not None
            else None
        )
        daemon = Node(
            NodeConfig(
                coordinator=self.address,
                slots=slots or self.slots,
                state_dir=self.state_dir / name,
                bind_host="127.0.0.1",
                node_id=name,
                curve=curve,
            ),
            clock=self.clock,
        )
        node = InProcessNode(name=name, daemon=daemon)
        self.nodes.append(node)
        node.address = await self._tg.start(self._serve, name, daemon.run, node.scope, node)
        return node

    def node(self, name: str) -> InProcessNode:
        """The node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    async def stop_node(self, node: InProcessNode | str, *, reason: str = "stopped") -> None:
        """Stop a node gracefully, like SIGTERM stops a node process: it tells the
        coordinator it leaves (its jobs fail over at once), stops its subtasks without
        committing, then its task ends. Returns once it ended."""
        node = self.node(node) if isinstance(node, str) else node
        if node.running:
            with anyio.move_on_after(self.stop_timeout_s):
                await node.daemon.leave(reason)
            node.scope.cancel()
        with anyio.move_on_after(self.stop_timeout_s) as waited:
            await node.done.wait()
        if waited.cancel_called:
            log.warning(
                "node %s did not end within %.1f s of stopping", node.name, self.stop_timeout_s
            )

    async def crash_node(self, node: InProcessNode | str) -> None:
        """End a node's task at once, without a word to the coordinator (its sockets
        close): the coordinator notices only when its heartbeats stop."""
        node = self.node(node) if isinstance(node, str) else node
        node.scope.cancel()
        await node.done.wait()
