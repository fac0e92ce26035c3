"""The payload of a BARRIER frame: what the checkpoint is and where its files go.

The frame header carries the checkpoint id (``arg``); the payload is the orjson
encoding of ``{"kind": kind, "dir": directory}``, plus ``"trace"`` (the checkpoint's
W3C trace context, string fields) when the coordinator traces it. A subtask that receives a barrier
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
    trace: dict[str, str] | None = None  # the checkpoint's trace context, if traced

    def encode(self) -> bytes:
        """The frame payload."""
        if self.trace:
            return orjson.dumps({"kind": self.kind, "dir": self.directory, "trace": self.trace})
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
        trace = meta.get("trace")
        if trace is not None and not (
            isinstance(trace, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in trace.items())
        ):
            raise FrameError("a barrier's 'trace' must be an object of strings")
        return cls(kind=kind, directory=meta["dir"], trace=trace)
