"""Where the coordinator's collaborators send control messages: to a node by id, or
back to the peer whose request is being answered (now or later)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mesh.coordinator.registry import NodeRegistry
from mesh.protocol import codec
from mesh.transport.sockets import Outbox

__all__ = ["Caller", "ControlOut"]

log = logging.getLogger("mesh.coordinator")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a message: a ROUTER identity, and the request id a reply must carry."""

    identity: bytes
    rid: str | None = None


class ControlOut:
    """Encodes and queues control messages on the coordinator's ROUTER socket."""

    def __init__(self, nodes: NodeRegistry) -> None:
        self._nodes = nodes
        self._outbox: Outbox | None = None

    def attach(self, outbox: Outbox) -> None:
        """Send through ``outbox`` from now on (the daemon binds it in ``run``)."""
        self._outbox = outbox

    def send(self, identity: bytes, msg: Any, rid: str | None = None) -> None:
        """Send ``msg`` to the peer ``identity``."""
        assert self._outbox is not None, "the coordinator is not running"
        self._outbox.send([identity, *codec.encode(msg, rid=rid)])

    def reply(self, caller: Caller, msg: Any) -> None:
        """Answer ``caller``'s request."""
        self.send(caller.identity, msg, caller.rid)

    def to_node(self, node_id: str, msg: Any) -> None:
        """Send ``msg`` to a registered node (logged and dropped if it is not)."""
        node = self._nodes.get(node_id)
        if node is None:
            log.warning("cannot send %s to node %s: not registered", type(msg).__name__, node_id)
            return
        self.send(node.identity, msg)
