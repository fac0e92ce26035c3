"""Keys → key groups → subtasks, identical in every process.

Rules:
1. ``key_group(key) = mix(crc32(canonical(key))) % max_parallelism``. ``canonical`` is the
   key's JSON encoding (orjson, sorted object keys), so the same key gives the same bytes
   in every process; Python's ``hash()`` is salted per process and is never used.
   Integral floats and bools are folded to ints first, because ``1 == 1.0 == True`` as a
   dict key, and keys that are equal in state must land in the same group.
2. Subtask ``i`` of ``p`` owns the contiguous key groups
   ``[ceil(i*M/p), ceil((i+1)*M/p))`` (Flink's range assignment), so restoring at another
   parallelism reads ranges, and the owner of a group is ``kg * p // M``.

The hash is part of the snapshot format: changing it would move keys between subtasks
and strand their state, so it never changes.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "KeyGroupRange",
    "KeyGroupRouter",
    "canonical_json",
    "canonical_key",
    "key_group_for",
    "key_group_range",
    "stable_hash",
    "subtask_for_key_group",
]

DEFAULT_MAX_PARALLELISM = 128
_MASK32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    # murmur3's finaliser: spreads crc32's bits so low-order bits are well mixed.
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


_INT64 = range(-(2**63), 2**63)


def canonical_key(key: Any) -> Hashable:
    """The form a key is stored under: lists become tuples, integral floats become ints."""
    if isinstance(key, list | tuple):
        return tuple(canonical_key(k) for k in key)
    if isinstance(key, bool):
        return int(key)  # True == 1 as a dict key, so they must share a key group
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if isinstance(key, dict):
        raise TypeError("a key must be a str, number, bool, None or a list of those, not a dict")
    return key  # type: ignore[no-any-return]


def _encode_key(key: Any) -> Any:
    # JSON has no 64-bit limit but orjson does: hash huge ints by their decimal text.
    if isinstance(key, int) and key not in _INT64:
        return str(key)
    if isinstance(key, tuple):
        return tuple(_encode_key(k) for k in key)
    return key


def canonical_json(key: Any) -> bytes:
    """The canonical encoding of a key: equal keys (``1``, ``1.0``, ``True``) encode alike."""
    try:
        return orjson.dumps(_encode_key(canonical_key(key)), option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise TypeError(f"cannot encode key of type {type(key).__name__}: {exc}") from None


def stable_hash(key: Any) -> int:
    """A 32-bit hash of ``key`` that is the same in every process and on every run."""
    return _fmix32(zlib.crc32(canonical_json(key)))


def key_group_for(key: Any, max_parallelism: int) -> int:
    """The key group ``key`` belongs to."""
    return stable_hash(key) % max_parallelism


def subtask_for_key_group(key_group: int, parallelism: int, max_parallelism: int) -> int:
    """The subtask index (of ``parallelism``) that owns ``key_group``."""
    return key_group * parallelism // max_parallelism


@dataclass(frozen=True, slots=True)
class KeyGroupRange:
    """Key groups ``start`` (inclusive) to ``end`` (exclusive)."""

    start: int
    end: int

    def __contains__(self, key_group: object) -> bool:
        return isinstance(key_group, int) and self.start <= key_group < self.end

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def key_group_range(subtask: int, parallelism: int, max_parallelism: int) -> KeyGroupRange:
    """The key groups subtask ``subtask`` of ``parallelism`` owns."""
    if not 0 < parallelism <= max_parallelism:
        raise ValueError(
            f"parallelism must be in 1..max_parallelism ({max_parallelism}), got {parallelism}"
        )
    if not 0 <= subtask < parallelism:
        raise ValueError(f"subtask must be in 0..{parallelism - 1}, got {subtask}")
    start = -(-subtask * max_parallelism // parallelism)
    end = -(-(subtask + 1) * max_parallelism // parallelism)
    return KeyGroupRange(start, end)


class KeyGroupRouter:
    """Maps keys to the consuming subtask of a hash edge, with a bounded memo.

    Hot path of every keyed exchange: a dict hit costs far less than encoding and hashing,
    and real key sets repeat. The memo is dropped wholesale when it outgrows its bound.
    """

    __slots__ = ("_memo", "_memo_limit", "_owner", "max_parallelism", "parallelism")

    def __init__(self, parallelism: int, max_parallelism: int, memo_limit: int = 65_536) -> None:
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        # owner[kg] = consuming subtask for key group kg.
        self._owner = [
            subtask_for_key_group(kg, parallelism, max_parallelism) for kg in range(max_parallelism)
        ]
        # key -> subtask; cleared when it exceeds _memo_limit entries.
        self._memo: dict[Any, int] = {}
        self._memo_limit = memo_limit

    def subtasks_for(self, keys: list[Any]) -> list[int]:
        """The consuming subtask of each of ``keys``: one memo lookup per key, and the
        hash only for keys the memo does not hold."""
        known = self._memo.get
        try:
            subtasks = [known(key, -1) for key in keys]
        except TypeError:  # an unhashable key (a list)
            return [self.subtask_for(key) for key in keys]
        if -1 in subtasks:  # keys not seen yet (or since the memo was last dropped)
            for index, subtask in enumerate(subtasks):
                if subtask < 0:
                    subtasks[index] = self.subtask_for(keys[index])
        return subtasks

    def subtask_for(self, key: Any) -> int:
        """The consuming subtask for ``key``."""
        memo = self._memo
        try:
            return memo[key]
        except (KeyError, TypeError):
            pass
        subtask = self._owner[stable_hash(key) % self.max_parallelism]
        try:
            if len(memo) >= self._memo_limit:
                memo.clear()
            memo[key] = subtask
        except TypeError:  # unhashable (a list): not memoised
            pass
        return subtask
