"""Keyed state as user code sees it: value, list, map and reducing state, with TTL.

Each view is bound to a backend table and the key being processed. TTL follows
Flink's default: an entry's deadline is set when it is written, reading does not
extend it, and an expired entry reads as absent (and is dropped). While a snapshot is
being written, every read of a mutable value returns a private copy that is stored
back (copy-on-write), so mutating what ``get()`` returned never changes a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

from mesh.errors import StateError
from mesh.state.backends import KeyedStateBackend

__all__ = ["ListState", "MapState", "ReducingState", "StateAccessor", "ValueState"]

_MISSING: Any = object()


class _View:
    __slots__ = ("_backend", "_key", "_name", "_table", "_ttl")

    def __init__(
        self,
        backend: KeyedStateBackend,
        name: str,
        key: Hashable,
        ttl_ms: int | None,
        namespace: str,
    ) -> None:
        self._backend = backend
        self._name = name
        self._key = key
        self._ttl = ttl_ms
        self._table = backend.table(name, namespace, ttl_ms)

    def _read(self) -> Any:
        entry = self._table.get(self._key, _MISSING)
        if entry is _MISSING:
            return _MISSING
        if self._ttl is not None:
            value, expires = entry
            if expires <= self._backend.clock.now_ms():
                del self._table[self._key]
                return _MISSING
        else:
            value = entry
        detached = self._backend.detach(value)
        if detached is not value:
            self._write(detached, keep_deadline=entry)
        return detached

    def _write(self, value: Any, keep_deadline: Any = None) -> None:
        if self._ttl is None:
            self._table[self._key] = value
        elif keep_deadline is not None:
            self._table[self._key] = (value, keep_deadline[1])
        else:
            self._table[self._key] = (value, self._backend.clock.now_ms() + self._ttl)

    def clear(self) -> None:
        """Remove this key's entry."""
        self._table.pop(self._key, None)


class ValueState(_View):
    """One value per key."""

    __slots__ = ("_default",)

    def __init__(self, *args: Any, default: Any = None) -> None:
        super().__init__(*args)
        self._default = default

    def get(self) -> Any:
        """The value, or the default if there is none."""
        value = self._read()
        return self._default if value is _MISSING else value

    def set(self, value: Any) -> None:
        """Replace the value."""
        self._write(value)


class ListState(_View):
    """A list of values per key."""

    def get(self) -> list[Any]:
        """The values (empty if none)."""
        value = self._read()
        return [] if value is _MISSING else list(value)

    def add(self, value: Any) -> None:
        """Append a value."""
        current = self._read()
        self._write([value] if current is _MISSING else [*current, value])

    def update(self, values: list[Any]) -> None:
        """Replace all values."""
        self._write(list(values))


class MapState(_View):
    """A map from string to value per key."""

    def _map(self) -> dict[str, Any]:
        value = self._read()
        return {} if value is _MISSING else value

    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        return self._map().get(key, default)

    def put(self, key: str, value: Any) -> None:
        """Set the value under ``key`` (a string: state is stored as JSON)."""
        if not isinstance(key, str):
            raise StateError(f"MapState {self._name!r}: keys must be strings, got {key!r}")
        self._write({**self._map(), key: value})

    def remove(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""
        current = self._map()
        if key in current:
            self._write({k: v for k, v in current.items() if k != key})

    def contains(self, key: str) -> bool:
        """Whether ``key`` is present."""
        return key in self._map()

    def items(self) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs."""
        return iter(list(self._map().items()))

    def keys(self) -> Iterator[str]:
        """The keys."""
        return iter(list(self._map()))

    def values(self) -> Iterator[Any]:
        """The values."""
        return iter(list(self._map().values()))


class ReducingState(_View):
    """A value per key that each ``add`` combines with ``fn(current, new)``."""

    __slots__ = ("_fn",)

    def __init__(self, *args: Any, fn: Callable[[Any, Any], Any]) -> None:
        super().__init__(*args)
        self._fn = fn

    def get(self) -> Any:
        """The reduced value, or None."""
        value = self._read()
        return None if value is _MISSING else value

    def add(self, value: Any) -> None:
        """Combine ``value`` into the state."""
        current = self._read()
        self._write(value if current is _MISSING else self._fn(current, value))


class StateAccessor:
    """``ctx.state`` in a keyed process function: named state of the current key."""

    def __init__(
        self,
        backend: KeyedStateBackend,
        parse_ttl: Callable[[Any], int | None],
        namespace: str = "",
    ) -> None:
        self._backend = backend
        self._parse_ttl = parse_ttl
        self._namespace = namespace
        self.key: Hashable = None

    def _args(self, name: str, ttl: Any) -> tuple[Any, ...]:
        if not isinstance(name, str) or not name:
            raise StateError(f"state names must be non-empty strings, got {name!r}")
        return (self._backend, name, self.key, self._parse_ttl(ttl), self._namespace)

    def value(self, name: str, default: Any = None, *, ttl: Any = None) -> ValueState:
        """The value state ``name`` of the current key."""
        return ValueState(*self._args(name, ttl), default=default)

    def list(self, name: str, *, ttl: Any = None) -> ListState:
        """The list state ``name`` of the current key."""
        return ListState(*self._args(name, ttl))

    def map(self, name: str, *, ttl: Any = None) -> MapState:
        """The map state ``name`` of the current key."""
        return MapState(*self._args(name, ttl))

    def reducing(
        self, name: str, fn: Callable[[Any, Any], Any], *, ttl: Any = None
    ) -> ReducingState:
        """The reducing state ``name`` of the current key, combined with ``fn``."""
        if not callable(fn):
            raise StateError(f"reducing state {name!r} needs a function, got {fn!r}")
        return ReducingState(*self._args(name, ttl), fn=fn)
