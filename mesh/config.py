"""Daemon settings from flags, ``MESH_*`` environment variables and TOML files.

Precedence: flag > environment > file > default. A file may hold the keys at top level
or in a table named after the daemon (``[node]``, ``[coordinator]``). Every value is
checked when the daemon starts; a bad one raises ``ConfigError`` with one line naming
the key, where the value came from, the value, and what is allowed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mesh.errors import ConfigError
from mesh.time.durations import parse_duration
from mesh.transport.sockets import parse_endpoint

__all__ = [
    "COORDINATOR_SETTINGS",
    "NODE_SETTINGS",
    "Resolved",
    "Setting",
    "default_state_dir",
    "is_duration",
    "resolve_settings",
    "resolve_with_origins",
]


def default_state_dir(role: str) -> Path:
    """``$XDG_STATE_HOME/mesh/<role>`` (``~/.local/state/mesh/<role>``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mesh" / role


def _endpoint(bind: bool) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        return str(parse_endpoint(str(value), allow_wildcard_port=bind))

    return parse


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        expected = f"expected an integer >= {minimum}"
        if isinstance(value, bool):
            raise ValueError(expected)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(expected) from None
        if number < minimum or (isinstance(value, float) and value != number):
            raise ValueError(expected)
        return number

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _pause(value: Any) -> int:
    return parse_duration(value, what="")  # zero allowed


def _duration(value: Any) -> int:
    ms = parse_duration(value, what="")
    if ms <= 0:
        raise ValueError("expected a duration above zero, like 500ms or 2s")
    return ms


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _text(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("expected a non-empty string")
    return text


_HOST = re.compile(r"^(\*|[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")


def _host(wildcard: bool) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value)
        if not _HOST.match(text) or (text == "*" and not wildcard):
            allowed = "a host name, an IPv4 address or a [bracketed] IPv6 address"
            raise ValueError(
                f"expected {allowed}" + (", or * for every interface" if wildcard else "")
            )
        return text

    return parse


def _http_url(value: Any) -> str:
    text = _text(value)
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("expected an http:// or https:// URL with a host, like http://HOST:4318")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("expected a port between 0 and 65535") from None
    return text.rstrip("/")


def _http_address(value: Any) -> str | None:
    """``HOST:PORT`` to serve HTTP on, or off (``off`` or empty)."""
    from mesh.coordinator.web.settings import parse_http_address

    text = str(value).strip() if value is not None else ""
    if text.lower() in ("", "off"):
        return None
    host, _port = parse_http_address(text)
    _host(True)(host if ":" not in host else f"[{host}]")
    return text


_SIZE = re.compile(r"^(?P<number>\d+)\s*(?P<unit>|B|KiB|MiB|GiB)$")
_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _size(value: Any) -> int:
    """A size in bytes: an integer, or one with a unit like 64MiB (B, KiB, MiB, GiB)."""
    expected = "expected a size in bytes of at least 1KiB, like 65536 or 64MiB"
    if isinstance(value, bool):
        raise ValueError(expected)
    match = _SIZE.match(str(value).strip())
    if match is None:
        raise ValueError(expected)
    size = int(match.group("number")) * _UNITS[match.group("unit")]
    if size < 1024 or size >= 1 << 63:
        raise ValueError(expected)
    return size


def _path(value: Any) -> Path:
    return Path(_text(value)).expanduser()


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false (or 1 or 0)")


@dataclass(frozen=True, slots=True)
class Setting:
    """One configurable key."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "MESH_" + self.key.upper()


_LOG_LEVEL = Setting(
    "log_level", _choice("debug", "info", "warning", "error"), "info", "log verbosity"
)
_METRICS_PORT = Setting(
    "metrics_port",
    _int_at_least(0),
    0,
    "serve Prometheus metrics at http://METRICS_HOST:PORT/metrics (0: off)",
)
_METRICS_HOST = Setting(
    "metrics_host", _host(True), "127.0.0.1", "interface the metrics endpoint listens on"
)
_LOG_FORMAT = Setting(
    "log_format",
    _choice("text", "json"),
    "text",
    "log lines as plain text (journald-friendly) or one JSON object each",
)
_OTLP_ENDPOINT = Setting(
    "otlp_endpoint",
    _http_url,
    None,
    "OTLP/HTTP collector to export traces and metrics to, like http://127.0.0.1:4318 "
    "(default: the OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _METRICS_ENDPOINT or "
    "OTEL_EXPORTER_OTLP_ENDPOINT variable; none: no export)",
)
_KEYS = Setting(
    "keys",
    _path,
    None,
    "directory of CURVE keys (mesh keys generate): every socket authenticated and "
    "encrypted; only keys in KEYS/public may connect (default: none, loopback only)",
)
_MAX_BAD_MESSAGES = Setting(
    "max_bad_messages",
    _count,
    100,
    "malformed or forged messages after which a peer's connection is cut (0: never)",
)
_INSECURE = Setting(
    "insecure",
    _flag,
    False,
    "allow a non-loopback address without keys (only on a network you trust)",
)

COORDINATOR_SETTINGS = (
    Setting("bind", _endpoint(bind=True), "tcp://127.0.0.1:5550", "address to listen on"),
    Setting("state_dir", _path, None, "directory for the coordinator's state"),
    Setting("heartbeat_interval", _duration, 1000, "how often nodes report"),
    Setting("heartbeat_timeout", _duration, 5000, "silence after which a node is lost"),
    Setting("placement", _choice("spread", "pack"), "spread", "how subtasks fill nodes"),
    Setting("slot_timeout", _duration, 300_000, "a job waits this long for free slots"),
    Setting("checkpoint_dir", _path, None, "where checkpoints go (default: state_dir/checkpoints)"),
    Setting("checkpoint_timeout", _duration, 600_000, "a checkpoint taking longer is aborted"),
    Setting("checkpoint_min_pause", _pause, 0, "least time between two checkpoints"),
    Setting(
        "tolerable_checkpoint_failures",
        _count,
        3,
        "consecutive failed checkpoints a job survives",
    ),
    Setting("retained_checkpoints", _positive_int, 3, "completed checkpoints kept per job"),
    Setting(
        "max_message_size",
        _size,
        64 << 20,
        "largest message part accepted from a node or client (like 64MiB); a peer that "
        "sends a larger one is disconnected",
    ),
    _MAX_BAD_MESSAGES,
    _KEYS,
    _INSECURE,
    _OTLP_ENDPOINT,
    _METRICS_PORT,
    _METRICS_HOST,
    Setting(
        "http",
        _http_address,
        None,
        "serve the dashboard and REST API at HOST:PORT, like 127.0.0.1:8081 (port 0: any "
        "free one; off: not served); with keys, requests need KEYS/http.token",
    ),
    Setting(
        "http_tls_cert", _path, None, "certificate (PEM) to serve HTTPS with (with http_tls_key)"
    ),
    Setting("http_tls_key", _path, None, "private key (PEM) of http_tls_cert"),
    Setting(
        "jaeger_url",
        _http_url,
        None,
        "Jaeger's UI, like http://127.0.0.1:16686: the dashboard links checkpoints and "
        "failovers to their traces there",
    ),
    _LOG_LEVEL,
    _LOG_FORMAT,
)

NODE_SETTINGS = (
    Setting("coordinator", _endpoint(bind=False), "tcp://127.0.0.1:5550", "coordinator address"),
    Setting("slots", _positive_int, 1, "slots offered"),
    Setting("state_dir", _path, None, "directory for the node's state"),
    Setting("bind_host", _host(True), "127.0.0.1", "interface for the data and credit ports"),
    Setting("advertise_host", _host(False), None, "host name peers use to reach this node"),
    Setting("node_id", _text, None, "stable id of this node (default: host-pid)"),
    Setting(
        "max_frame_size",
        _size,
        64 << 20,
        "largest data frame part accepted from another node (like 64MiB); a peer that "
        "sends a larger one is disconnected",
    ),
    _MAX_BAD_MESSAGES,
    _KEYS,
    _INSECURE,
    _OTLP_ENDPOINT,
    _METRICS_PORT,
    _METRICS_HOST,
    _LOG_LEVEL,
    _LOG_FORMAT,
)

# Every key any daemon knows: a shared file may hold keys for both at its top level.
_ALL_KEYS = {s.key for s in (*COORDINATOR_SETTINGS, *NODE_SETTINGS)}


def _load_file(path: Path, role: str, allowed: set[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    values: dict[str, Any] = {}
    other_roles = {"node", "coordinator"} - {role}
    for key, value in data.items():
        if key == role and isinstance(value, dict):
            values.update(value)
        elif key in other_roles and isinstance(value, dict):
            continue
        else:
            values[key] = value
    for key in list(values):
        if key in allowed:
            continue
        section = data.get(role)
        if key in _ALL_KEYS and not (isinstance(section, dict) and key in section):
            del values[key]  # a shared file's top-level key meant for the other daemon
            continue
        raise ConfigError(
            f"{path}: unknown key {key!r} for a {role} (allowed: {', '.join(sorted(allowed))})"
        )
    return values


@dataclass(frozen=True, slots=True)
class Resolved:
    """A setting's effective value and where it came from."""

    value: Any
    source: str  # "default", "file", "env" or "flag"
    where: str = ""  # the file's path, the variable's name or the flag


def is_duration(setting: Setting) -> bool:
    """Whether the setting is a duration (its value in milliseconds)."""
    return setting.parse in (_duration, _pause)


def resolve_settings(
    settings: tuple[Setting, ...],
    role: str,
    *,
    flags: Mapping[str, Any],
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every setting's value, from flags, env, file, then defaults, each validated."""
    resolved = resolve_with_origins(settings, role, flags=flags, config_file=config_file, env=env)
    return {key: r.value for key, r in resolved.items()}


def resolve_with_origins(
    settings: tuple[Setting, ...],
    role: str,
    *,
    flags: Mapping[str, Any],
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Resolved]:
    """Like :func:`resolve_settings`, with where each value came from."""
    env = os.environ if env is None else env
    by_key = {s.key: s for s in settings}
    file_values = (
        _load_file(Path(config_file), role, set(by_key)) if config_file is not None else {}
    )
    resolved: dict[str, Resolved] = {}
    for setting in settings:
        if flags.get(setting.key) is not None:
            raw, source, where = flags[setting.key], "flag", f"--{setting.key.replace('_', '-')}"
        elif setting.env in env:
            raw, source, where = env[setting.env], "env", setting.env
        elif setting.key in file_values:
            raw, source, where = file_values[setting.key], "file", f"{config_file}"
        else:
            resolved[setting.key] = Resolved(setting.default, "default")
            continue
        try:
            resolved[setting.key] = Resolved(setting.parse(raw), source, where)
        except ValueError as exc:
            raise ConfigError(
                f"{setting.key} = {raw!r} (from {where}) is not allowed: {exc}"
            ) from None
    if (
        "heartbeat_timeout" in resolved
        and resolved["heartbeat_timeout"].value <= resolved["heartbeat_interval"].value
    ):
        raise ConfigError(
            f"heartbeat_timeout = {resolved['heartbeat_timeout'].value} ms is not allowed: it "
            f"must be longer than heartbeat_interval ({resolved['heartbeat_interval'].value} "
            "ms), or every node would be declared lost between two heartbeats"
        )
    return resolved
