"""Fault injection points, for the chaos tests (``tests/chaos``) and anyone reproducing them.

A daemon started with ``MESH_FAULTS="point=N[,point=N...]"`` kills itself with SIGKILL
the Nth time it reaches ``point`` — at exactly the instant a test wants to prove safe,
which an outside ``kill -9`` can only hit by luck. Points:

* ``checkpoint.recorded`` (coordinator): a checkpoint is complete and recorded in the
  coordinator's database, and no node was told yet (sinks have not committed).
* ``snapshot.writing`` (node): a subtask wrote a snapshot file but has not acknowledged
  the checkpoint.

Without ``MESH_FAULTS`` every point is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["reach"]

log = logging.getLogger("mesh.faults")


POINTS = ("checkpoint.recorded", "snapshot.writing")


def _parse(spec: str) -> dict[str, int]:
    plan: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("=")
        name = name.strip()
        if name not in POINTS:
            raise SystemExit(
                f"MESH_FAULTS: unknown fault point {name!r} (known: {', '.join(POINTS)})"
            )
        try:
            plan[name] = int(count) if count else 1
        except ValueError:
            raise SystemExit(f"MESH_FAULTS: {part!r} is not point=N (N a number)") from None
    return plan


_PLAN = _parse(os.environ.get("MESH_FAULTS", ""))
_SEEN: dict[str, int] = {}


def reach(point: str) -> None:
    """Count a visit to ``point``; die here (SIGKILL) if this is the planned visit."""
    if point not in _PLAN:
        return
    _SEEN[point] = _SEEN.get(point, 0) + 1
    if _SEEN[point] == _PLAN[point]:
        log.warning("fault injection: killing this process at %s (visit %d)", point, _SEEN[point])
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
