"""A process's CURVE settings: its key pair, where servers' public keys are, and (for a
daemon) the allow-list its ZAP handler checks clients against. See ``keys`` for the
layout of a keys directory and ``zap`` for the handler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mesh.transport.keys import ALLOW_DIR, KeyPair, load_pair, load_public, server_key_paths
from mesh.transport.zap import AllowList

__all__ = ["Curve", "security_note"]


@dataclass(frozen=True, slots=True)
class Curve:
    """CURVE keys of one process."""

    directory: Path
    pair: KeyPair
    allow: AllowList | None = None  # a daemon's allow-list; None for a client

    @classmethod
    def load(cls, directory: Path, names: Sequence[str], *, serve: bool) -> Curve:
        """The first pair of ``names`` in ``directory``; with ``serve``, the allow-list
        ``directory/public`` too. Raises ConfigError naming the missing file."""
        pair = load_pair(directory, names)
        allow = AllowList(directory / ALLOW_DIR) if serve else None
        return cls(directory=directory, pair=pair, allow=allow)

    def server_key(self, names: Sequence[str]) -> bytes:
        """The public key of the server known by the first of ``names`` that has one
        (ConfigError if none does)."""
        return load_public([p for n in names for p in server_key_paths(self.directory, n)])

    def describe(self) -> str:
        """One phrase for start-up logs."""
        allowed = (
            f", {len(self.allow.keys)} allowed key(s) in {self.allow.directory}"
            if self.allow is not None
            else ""
        )
        return f"CURVE-protected: key pair {self.pair.path}{allowed}"


def security_note(curve: Curve | None) -> str:
    """How a daemon's sockets are protected, for its start-up log line."""
    return curve.describe() if curve is not None else "no keys: only for one trusted machine"
