"""Settings shared by the Kafka source and sink: checks for the description's
constructors, the client's configuration, and the value and key formats."""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mesh.errors import GraphError

__all__ = [
    "FORMATS",
    "METADATA_TIMEOUT_S",
    "check_bootstrap",
    "check_config",
    "check_format",
    "check_positive_int",
    "client_config",
    "require_client",
    "retrying",
]

T = TypeVar("T")

# Coordinator errors a fresh cluster (or a moving coordinator) answers for a while.
_COORDINATOR_ERRORS = frozenset({14, 15, 16})  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR

log = logging.getLogger("mesh.connectors.kafka")

#: What a value (or key) is decoded to / encoded from: ``json`` (orjson), ``text``
#: (UTF-8 ``str``), ``bytes`` (Python ``bytes``, as they are: not JSON, so convert them
#: before a keyed or network edge).
FORMATS = ("json", "text", "bytes")

#: How long a reader or writer waits for the brokers to answer a metadata or offsets
#: request before it fails with an error naming the bootstrap servers.
METADATA_TIMEOUT_S = 10.0

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+):(\d{1,5})$")


def require_client(owner: str) -> None:
    """Raise a clear ``GraphError`` when confluent-kafka is not installed."""
    if importlib.util.find_spec("confluent_kafka") is None:
        raise GraphError(
            f"{owner} needs the confluent-kafka package: pip install 'mesh-stream[kafka]'"
        )


def check_bootstrap(owner: str, bootstrap: object) -> str:
    """``host:port[,host:port...]``, as Kafka's ``bootstrap.servers``."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise TypeError(
            f"{owner} bootstrap must be a string 'host:port[,host:port...]', got {bootstrap!r}"
        )
    for part in bootstrap.split(","):
        server = part.strip()
        if server.startswith("PLAINTEXT://") or server.startswith("SSL://"):
            server = server.split("://", 1)[1]
        match = _HOST_PORT.match(server)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError(
                f"{owner} bootstrap {bootstrap!r}: {part.strip()!r} is not host:port "
                "(a comma-separated list of host:port, e.g. 'localhost:9092')"
            )
    return bootstrap


def check_config(owner: str, config: object) -> dict[str, str]:
    """Extra librdkafka settings (``{"security.protocol": "SSL", ...}``), passed to the
    client as they are; they win over mesh's own."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TypeError(f"{owner} config must be a dict of librdkafka settings, got {config!r}")
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{owner} config: setting names must be strings, got {key!r}")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise TypeError(
                f"{owner} config[{key!r}] must be a string (or number, bool), got {value!r}"
            )
        out[key] = value
    return out


def check_format(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    """One of ``FORMATS`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if value not in FORMATS:
        allowed = ", ".join(repr(f) for f in FORMATS) + (" or None" if optional else "")
        raise ValueError(f"{owner} {name} must be {allowed}, got {value!r}")


def check_positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner} {name} must be a positive int, got {value!r}")
    return value


def client_config(
    bootstrap: str, client_id: str, ours: dict[str, Any], user: dict[str, str]
) -> dict[str, Any]:
    """The configuration of one confluent-kafka client: the bootstrap servers, mesh's
    settings, and the user's (which win)."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "error_cb": _error_logger(client_id),
        # librdkafka's own log lines go through Python logging (the daemon's log format),
        # not straight to stderr.
        "logger": _CLIENT_LOG,
        **ours,
        **user,
    }


_CLIENT_LOG = logging.getLogger("mesh.connectors.kafka.client")


def _error_logger(client_id: str) -> Callable[[Any], None]:
    def log_error(error: Any) -> None:
        # Transport errors are retried by the client; they are worth a line in the log.
        log.warning("kafka client %s: %s", client_id, error)

    return log_error


def retrying(call: Callable[[], T], timeout_s: float) -> T:
    """``call()``, called again while it raises a retriable ``KafkaException`` (such as
    "not coordinator" while a group's coordinator moves), until ``timeout_s`` passed."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            again = error.retriable() or error.code() in _COORDINATOR_ERRORS
            if not again or time.monotonic() >= deadline:
                raise
        time.sleep(0.1)
