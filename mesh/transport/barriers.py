"""The payload of a BARRIER frame: what the checkpoint is and where its files go.

The frame header carries the checkpoint id (``arg``); the payload is the orjson
encoding of ``{"kind": kind, "dir": directory}``. A subtask that receives a barrier
forwards the same payload on every output channel, so every subtask of the job writes
its snapshot files into the same checkpoint directory.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from mesh.errors import FrameError
from mesh.protocol.states import CheckpointKind

__all__ = ["BarrierPayload"]


@dataclass(frozen=True, slots=True)
class BarrierPayload:
    """What travels with a checkpoint barrier."""

    kind: CheckpointKind
    directory: str  # the checkpoint directory every subtask writes its files into

    def encode(self) -> bytes:
        """The frame payload."""
        return orjson.dumps({"kind": self.kind, "dir": self.directory})

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> BarrierPayload:
        """The payload of a BARRIER frame; FrameError says what is wrong with it."""
        try:
            meta = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"barrier payload is not JSON ({exc})") from None
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("kind"), str)
            and isinstance(meta.get("dir"), str)
        ):
            raise FrameError("a barrier payload needs strings 'kind' and 'dir'")
        try:
            kind = CheckpointKind(meta["kind"])
        except ValueError:
            raise FrameError(f"unknown checkpoint kind {meta['kind']!r} in a barrier") from None
        return cls(kind=kind, directory=meta["dir"])
