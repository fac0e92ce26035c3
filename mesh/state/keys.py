"""Keys in snapshot files: canonical JSON text, and their key groups."""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import orjson

from mesh.errors import StateError
from mesh.graph.keygroups import canonical_key, key_group_for

__all__ = ["KeyCodec"]


def _text(key: Hashable) -> str:
    try:
        return orjson.dumps(key, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        # orjson stops at 64-bit ints; the standard library writes any int exactly.
        return json.dumps(key, sort_keys=True, separators=(",", ":"))


class KeyCodec:
    """Encodes state keys for snapshot rows (with their key group) and decodes them back.

    The text is canonical: keys that are equal in Python (``1``, ``1.0``, ``True``; a
    list and a tuple) get the same text, so they find the same state after a restore.
    Encodings are memoised up to a bound: real key sets repeat, and snapshots encode
    every key again.
    """

    def __init__(self, max_parallelism: int, memo_limit: int = 20_000) -> None:
        self.max_parallelism = max_parallelism
        self._memo: dict[Any, tuple[int, str]] = {}
        self._memo_limit = memo_limit

    def encode(self, key: Any) -> tuple[int, str]:
        """``(key_group, key as canonical JSON text)``."""
        try:
            return self._memo[key]
        except (KeyError, TypeError):
            pass
        try:
            canonical = canonical_key(key)
            encoded = (key_group_for(key, self.max_parallelism), _text(canonical))
        except (TypeError, ValueError) as exc:
            raise StateError(f"state key {key!r} cannot be stored: {exc}") from None
        if len(self._memo) >= self._memo_limit:
            self._memo.clear()
        try:
            self._memo[key] = encoded
        except TypeError:
            pass
        return encoded

    @staticmethod
    def decode(text: str) -> Hashable:
        """The state key a JSON text stands for (lists become tuples)."""
        value = orjson.loads(text)
        if isinstance(value, float) and text.lstrip("-").isdigit():
            value = int(text)  # an int beyond 64 bits, which orjson reads as a float
        return canonical_key(value)
