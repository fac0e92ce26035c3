"""Keys in snapshot files: canonical JSON text, and their key groups."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import orjson

from mesh.graph.keygroups import canonical_key, key_group_for

__all__ = ["KeyCodec"]


class KeyCodec:
    """Encodes state keys for snapshot rows (with their key group) and decodes them back.

    Encodings are memoised up to a bound: real key sets repeat, and snapshots encode
    every key again.
    """

    def __init__(self, max_parallelism: int, memo_limit: int = 100_000) -> None:
        self.max_parallelism = max_parallelism
        self._memo: dict[Any, tuple[int, str]] = {}
        self._memo_limit = memo_limit

    def encode(self, key: Any) -> tuple[int, str]:
        """``(key_group, key as JSON text)``."""
        try:
            return self._memo[key]
        except KeyError:
            pass
        text = orjson.dumps(key, option=orjson.OPT_SORT_KEYS).decode()
        encoded = (key_group_for(key, self.max_parallelism), text)
        if len(self._memo) >= self._memo_limit:
            self._memo.clear()
        self._memo[key] = encoded
        return encoded

    @staticmethod
    def decode(text: str) -> Hashable:
        """The state key a JSON text stands for (lists become tuples)."""
        return canonical_key(orjson.loads(text))
