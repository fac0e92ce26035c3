"""A small JSON Schema checker for the subset the docs' schemas use (``jsonschema`` is not a
dependency): ``type`` (one or a list), ``enum``, ``required``, ``properties``,
``additionalProperties`` (a boolean or a schema), ``items``, ``minimum``, ``maximum``;
``$schema``, ``title`` and ``description`` are annotations. Any other keyword is refused,
so a schema cannot silently rely on something this does not check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

KEYWORDS = {
    "$schema", "title", "description", "type", "enum", "required", "properties",
    "additionalProperties", "items", "minimum", "maximum",
}  # fmt: skip

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def problems(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``path: what`` lines (empty: it fits)."""
    return list(_check(value, schema, path))


def _check(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"{path}: the schema uses keywords this checker lacks: {sorted(unknown)}")
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in allowed):
            got = f"{type(value).__name__} {value!r:.80}"
            yield f"{path}: expected {' or '.join(allowed)}, got {got}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: {value!r} is not one of {schema['enum']}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield f"{path}: {value} is below {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            yield f"{path}: {value} is above {schema['maximum']}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                yield f"{path}: missing key {key!r}"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                yield from _check(item, properties[key], f"{path}.{key}")
            elif extra is False:
                yield f"{path}: unexpected key {key!r} (not in the schema)"
            elif isinstance(extra, dict):
                yield from _check(item, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _check(item, schema["items"], f"{path}[{i}]")


def documented_paths(
    schema: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, schema) of every named property, depth first; ``[]`` marks array items."""
    for key, sub in schema.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        yield here, sub
        yield from documented_paths(sub, here)
        if "items" in sub:
            yield from documented_paths(sub["items"], here + "[]")
