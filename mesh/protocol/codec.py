"""Control messages on the wire: ``[header, body, *attachments]``.

* ``header``: a JSON object ``{"v": 1, "type": ..., "rid": ..., "trace": {...}}``;
  ``rid`` pairs a reply with its request, ``trace`` is room for trace context.
* ``body``: the message's fields as a JSON object, ``bytes`` fields left out.
* ``attachments``: the message's ``bytes`` fields, in declaration order (a code bundle,
  a batch of records), so large binary values are never base64-encoded.

Every message type is a frozen dataclass registered with ``@message("type")``. Decoding
checks the version, the type and every field's type, and turns anything unexpected into
a ``FrameError`` saying which message and field were wrong; it never raises anything
else, so a daemon can log and drop garbage.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_args, get_origin

import orjson

from mesh.errors import FrameError

__all__ = ["PROTOCOL_VERSION", "Envelope", "decode", "encode", "message"]

PROTOCOL_VERSION = 1

_Checker = Callable[[Any, str], Any]
_REGISTRY: dict[str, type[Any]] = {}
_CHECKERS: dict[type[Any], list[tuple[str, _Checker, bool]]] = {}

M = TypeVar("M")


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message with its request id and trace context."""

    message: Any
    rid: str | None = None
    trace: dict[str, Any] | None = None


def _fail(path: str, expected: str, value: Any) -> typing.NoReturn:
    raise FrameError(f"{path}: expected {expected}, got {type(value).__name__}")


def _checker_for(annotation: Any) -> _Checker:
    if annotation is Any:
        return lambda v, p: v
    if annotation is bool:

        def check_bool(v: Any, p: str) -> Any:
            if not isinstance(v, bool):
                _fail(p, "bool", v)
            return v

        return check_bool
    if annotation is int:

        def check_int(v: Any, p: str) -> Any:
            if isinstance(v, bool) or not isinstance(v, int):
                _fail(p, "int", v)
            return v

        return check_int
    if annotation is float:

        def check_float(v: Any, p: str) -> Any:
            if isinstance(v, bool) or not isinstance(v, int | float):
                _fail(p, "number", v)
            return float(v)

        return check_float
    if annotation is str:

        def check_str(v: Any, p: str) -> Any:
            if not isinstance(v, str):
                _fail(p, "string", v)
            return v

        return check_str
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_checker(annotation)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [_checker_for(a) for a in args if a is not type(None)]
        optional = type(None) in args

        def check_union(v: Any, p: str) -> Any:
            if v is None and optional:
                return None
            errors = []
            for check in inner:
                try:
                    return check(v, p)
                except FrameError as exc:
                    errors.append(str(exc))
            raise FrameError(errors[0] if errors else f"{p}: unexpected null")

        return check_union
    if origin is list:
        item = _checker_for(args[0]) if args else (lambda v, p: v)

        def check_list(v: Any, p: str) -> Any:
            if not isinstance(v, list):
                _fail(p, "list", v)
            return [item(x, f"{p}[{i}]") for i, x in enumerate(v)]

        return check_list
    if origin is tuple:
        return _tuple_checker(args)
    if origin is dict:
        value_check = _checker_for(args[1]) if args else (lambda v, p: v)

        def check_dict(v: Any, p: str) -> Any:
            if not isinstance(v, dict):
                _fail(p, "object", v)
            return {k: value_check(x, f"{p}.{k}") for k, x in v.items()}

        return check_dict
    if dataclasses.is_dataclass(annotation):
        cls = typing.cast(type[Any], annotation)

        def check_nested(v: Any, p: str) -> Any:
            if not isinstance(v, dict):
                _fail(p, "object", v)
            return _build(cls, v, {}, p)

        return check_nested
    raise TypeError(f"unsupported field type in a message: {annotation!r}")


def _enum_checker(cls: type[enum.Enum]) -> _Checker:
    by_value = {member.value: member for member in cls}
    allowed = ", ".join(map(repr, by_value))

    def check_enum(v: Any, p: str) -> Any:
        member = by_value.get(v) if isinstance(v, str | int) else None
        if member is None:
            raise FrameError(f"{p}: expected one of {allowed}, got {v!r}")
        return member

    return check_enum


def _tuple_checker(args: tuple[Any, ...]) -> _Checker:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _checker_for(args[0])

        def check_any_tuple(v: Any, p: str) -> Any:
            if not isinstance(v, list):
                _fail(p, "list", v)
            return tuple(item(x, f"{p}[{i}]") for i, x in enumerate(v))

        return check_any_tuple
    items = [_checker_for(a) for a in args]

    def check_tuple(v: Any, p: str) -> Any:
        if not isinstance(v, list) or len(v) != len(items):
            raise FrameError(f"{p}: expected a list of {len(items)}, got {v!r:.40}")
        return tuple(
            check(x, f"{p}[{i}]") for i, (check, x) in enumerate(zip(items, v, strict=True))
        )

    return check_tuple


def _fields(cls: type[Any]) -> list[tuple[str, _Checker, bool]]:
    cached = _CHECKERS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = []
        for f in dataclasses.fields(cls):
            annotation = hints[f.name]
            is_bytes = annotation is bytes
            cached.append(
                (f.name, (lambda v, p: v) if is_bytes else _checker_for(annotation), is_bytes)
            )
        _CHECKERS[cls] = cached
    return cached


def _build(cls: type[M], body: dict[str, Any], blobs: dict[str, bytes], path: str) -> M:
    kwargs: dict[str, Any] = {}
    for f, (name, checker, _) in zip(dataclasses.fields(cls), _fields(cls), strict=True):  # type: ignore[arg-type]
        if name in blobs:
            kwargs[name] = blobs[name]
        elif name in body:
            kwargs[name] = checker(body[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FrameError(f"{path}: missing field {name!r}")
    return cls(**kwargs)


def message(type_name: str) -> Callable[[type[M]], type[M]]:
    """Register a frozen dataclass as the message type ``type_name``."""

    def register(cls: type[M]) -> type[M]:
        if type_name in _REGISTRY:
            raise ValueError(f"message type {type_name!r} registered twice")
        cls.TYPE = type_name  # type: ignore[attr-defined]
        _REGISTRY[type_name] = cls
        return cls

    return register


def encode(msg: Any, *, rid: str | None = None, trace: dict[str, Any] | None = None) -> list[bytes]:
    """The frames of ``msg``."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": msg.TYPE}
    if rid is not None:
        header["rid"] = rid
    if trace:
        header["trace"] = trace
    body: dict[str, Any] = {}
    attachments: list[bytes] = []
    for name, _, is_bytes in _fields(type(msg)):
        value = getattr(msg, name)
        if is_bytes:
            attachments.append(bytes(value))
        else:
            body[name] = value
    return [orjson.dumps(header), orjson.dumps(body), *attachments]


def decode(frames: Sequence[bytes | memoryview]) -> Envelope:
    """Decode frames into an ``Envelope``; raises FrameError for anything malformed."""
    if len(frames) < 2:
        raise FrameError(f"control message has {len(frames)} frame(s), need at least 2")
    try:
        header = orjson.loads(frames[0])
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"control header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("control header must be a JSON object")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise FrameError(
            f"unsupported control protocol version {version!r} (this side speaks "
            f"{PROTOCOL_VERSION})"
        )
    type_name = header.get("type")
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None or not isinstance(type_name, str):
        raise FrameError(f"unknown control message type {type_name!r}")
    rid = header.get("rid")
    if rid is not None and not isinstance(rid, str):
        raise FrameError("control header rid must be a string")
    trace = header.get("trace")
    if trace is not None and not isinstance(trace, dict):
        raise FrameError("control header trace must be an object")
    try:
        body = orjson.loads(frames[1])
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"{type_name}: body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FrameError(f"{type_name}: body must be a JSON object")
    blob_names = [name for name, _, is_bytes in _fields(cls) if is_bytes]
    if len(frames) - 2 != len(blob_names):
        raise FrameError(
            f"{type_name}: expected {len(blob_names)} attachment(s), got {len(frames) - 2}"
        )
    blobs = {name: bytes(frames[2 + i]) for i, name in enumerate(blob_names)}
    try:
        msg = _build(cls, body, blobs, type_name)
    except (TypeError, ValueError) as exc:
        raise FrameError(f"{type_name}: {exc}") from None
    return Envelope(message=msg, rid=rid, trace=trace)
