"""The daemons' bodies, free of typer: ``mesh coordinator`` and ``mesh node`` run here.

``mesh.cli`` calls :func:`main` straight from the command line when a daemon is
started with flags it can read (every daemon start by ``mesh run``, the test clusters
and the systemd units): typer and what it imports for parsing (pydantic among them)
cost a daemon about 0.1 s of start-up and 7 MB of memory for nothing, since each
setting is parsed and checked by its own ``Setting`` anyway. Help, and anything this
reader does not understand, goes to typer (``mesh.commands.daemons``), whose
commands call the same functions below.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.commands.exits import EXIT_USAGE, fail
from mesh.commands.serving import (
    advertise_host_of,
    check_exposure,
    curve_of,
    daemon_settings,
    reload_keys,
    run_daemon,
    serve,
)
from mesh.errors import ConfigError, MeshError

if TYPE_CHECKING:
    from mesh.coordinator.web.settings import HttpSettings

__all__ = ["main", "parse_daemon_argv", "run_coordinator", "run_node"]


def run_coordinator(
    *,
    config: Path | None = None,
    bind: str | None = None,
    state_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    placement: str | None = None,
    slot_timeout: str | None = None,
    keys: Path | None = None,
    insecure: bool = False,
    otlp_endpoint: str | None = None,
    metrics_port: int | str | None = None,
    metrics_host: str | None = None,
    http: str | None = None,
    http_tls_cert: Path | None = None,
    http_tls_key: Path | None = None,
    jaeger_url: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> None:
    """Run a coordinator daemon until SIGTERM/SIGINT (``mesh coordinator``)."""
    from mesh.config import COORDINATOR_SETTINGS, default_state_dir
    from mesh.coordinator.daemon import Coordinator, CoordinatorConfig
    from mesh.systemd import notify
    from mesh.transport.exposure import endpoint_host

    s = daemon_settings(
        COORDINATOR_SETTINGS,
        "coordinator",
        config,
        bind=bind,
        state_dir=state_dir,
        checkpoint_dir=checkpoint_dir,
        placement=placement,
        slot_timeout=slot_timeout,
        keys=keys,
        insecure=insecure or None,
        otlp_endpoint=otlp_endpoint,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        http=http,
        http_tls_cert=http_tls_cert,
        http_tls_key=http_tls_key,
        jaeger_url=jaeger_url,
        log_level=log_level,
        log_format=log_format,
    )
    check_exposure("listen on", endpoint_host(s["bind"]), s)
    curve = curve_of(s, ["coordinator"])
    http_settings, http_token = http_of(s)
    daemon = Coordinator(
        CoordinatorConfig(
            bind=s["bind"],
            state_dir=s["state_dir"] or default_state_dir("coordinator"),
            heartbeat_interval_ms=s["heartbeat_interval"],
            heartbeat_timeout_ms=s["heartbeat_timeout"],
            placement=s["placement"],
            slot_timeout_ms=s["slot_timeout"],
            checkpoint_dir=s["checkpoint_dir"],
            checkpoint_timeout_ms=s["checkpoint_timeout"],
            checkpoint_min_pause_ms=s["checkpoint_min_pause"],
            tolerable_checkpoint_failures=s["tolerable_checkpoint_failures"],
            retained_checkpoints=s["retained_checkpoints"],
            max_message_bytes=s["max_message_size"],
            max_bad_messages=s["max_bad_messages"],
            curve=curve,
            http=http_settings,
            http_token=http_token,
            jaeger_url=s["jaeger_url"],
        )
    )

    def ready(endpoint: str) -> None:
        http_url = {"MESH_HTTP": daemon.http_url} if daemon.http_url else {}
        notify(
            READY=1,
            MAINPID=os.getpid(),
            MESH_ENDPOINT=endpoint,
            STATUS=f"listening on {endpoint}",
            **http_url,
        )

    run_daemon(
        "mesh-coordinator",
        None,
        s,
        lambda: serve(daemon.run, ready, on_reload=reload_keys(curve)),
    )


def http_of(s: dict[str, Any]) -> tuple[HttpSettings | None, str | None]:
    """The coordinator's HTTP settings and token (None, None: not served). Exits 2 if
    the address would expose the API: without keys only loopback may be served (anyone
    reaching it could cancel jobs), and with keys a non-loopback address needs TLS (the
    token would cross the network in clear) — either unless ``--insecure``."""
    if s["http"] is None:
        return None, None
    from mesh.coordinator.web.settings import HttpSettings, parse_http_address
    from mesh.transport.exposure import is_loopback
    from mesh.transport.keys import load_http_token

    host, port = parse_http_address(s["http"])
    cert, key = s["http_tls_cert"], s["http_tls_key"]
    if (cert is None) != (key is None):
        raise fail("http_tls_cert and http_tls_key go together: give both or neither", EXIT_USAGE)
    check_exposure("serve HTTP on", host, s)
    if s["keys"] is not None and cert is None and not is_loopback(host) and not s["insecure"]:
        raise fail(
            f"refusing to serve HTTP on {host} without TLS: the dashboard's token would "
            "cross the network in clear; give --http-tls-cert and --http-tls-key, serve "
            "on 127.0.0.1 and reach it through an SSH tunnel, or --insecure on a network "
            "you trust",
            EXIT_USAGE,
        )
    if cert is not None:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise fail(
                f"cannot load http_tls_cert {cert} with http_tls_key {key}: {exc}", EXIT_USAGE
            ) from None
    token = None
    if s["keys"] is not None:
        try:
            token = load_http_token(s["keys"])
        except ConfigError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    return HttpSettings(host, port, cert, key), token


def run_node(
    *,
    config: Path | None = None,
    coordinator: str | None = None,
    slots: int | str | None = None,
    state_dir: Path | None = None,
    bind_host: str | None = None,
    advertise_host: str | None = None,
    node_id: str | None = None,
    keys: Path | None = None,
    insecure: bool = False,
    otlp_endpoint: str | None = None,
    metrics_port: int | str | None = None,
    metrics_host: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> None:
    """Run a node daemon until SIGTERM/SIGINT (``mesh node``)."""
    from mesh.commands.service import node_status
    from mesh.config import NODE_SETTINGS, default_state_dir
    from mesh.node.daemon import Node, NodeConfig
    from mesh.protocol.messages import PeerAddress
    from mesh.systemd import notify
    from mesh.transport.keys import own_pair_names

    s = daemon_settings(
        NODE_SETTINGS,
        "node",
        config,
        coordinator=coordinator,
        slots=slots,
        state_dir=state_dir,
        bind_host=bind_host,
        advertise_host=advertise_host,
        node_id=node_id,
        keys=keys,
        insecure=insecure or None,
        otlp_endpoint=otlp_endpoint,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        log_level=log_level,
        log_format=log_format,
    )
    advertised = advertise_host_of(s)
    check_exposure("listen on", s["bind_host"], s)
    check_exposure("advertise", advertised, s)
    curve = curve_of(s, own_pair_names("node", s["node_id"]))
    daemon = Node(
        NodeConfig(
            coordinator=s["coordinator"],
            slots=s["slots"],
            state_dir=s["state_dir"] or default_state_dir("node"),
            bind_host=s["bind_host"],
            advertise_host=advertised,
            node_id=s["node_id"],
            max_frame_bytes=s["max_frame_size"],
            max_bad_messages=s["max_bad_messages"],
            curve=curve,
        )
    )

    def status() -> str:
        return node_status(
            s["coordinator"],
            registering=daemon.registering,
            slots=s["slots"],
            busy=daemon.busy_slots(),
        )

    def ready(address: PeerAddress) -> None:
        notify(
            READY=1,
            MAINPID=os.getpid(),
            MESH_NODE_ID=address.node_id,
            MESH_DATA_ENDPOINT=address.data_endpoint,
            MESH_CONTROL_ENDPOINT=address.control_endpoint,
            STATUS=status(),
        )

    run_daemon(
        "mesh-node",
        daemon.node_id,
        s,
        lambda: serve(
            daemon.run,
            ready,
            daemon.leave,
            starting=f"waiting for the coordinator at {s['coordinator']}",
            status=status,
            on_reload=reload_keys(curve),
        ),
        failures=(OSError, MeshError),
    )


DAEMONS: dict[str, Callable[..., None]] = {"coordinator": run_coordinator, "node": run_node}


def parse_daemon_argv(run: Callable[..., None], argv: Sequence[str]) -> dict[str, Any] | None:
    """``run``'s keyword arguments read from ``argv`` (``--name value``, ``--name=value``,
    or a bare ``--flag`` for a boolean), each value a string for its setting to parse
    (an integer for a numeric one);
    None for anything else (help, an unknown or repeated flag, a missing value, a stray
    argument), which typer then answers properly."""
    params = inspect.signature(run).parameters
    flags: dict[str, Any] = {}
    words = list(argv)
    while words:
        word = words.pop(0)
        if not word.startswith("--") or word == "--":
            return None
        name, has_value, value = word[2:].partition("=")
        key = name.replace("-", "_")
        if key not in params or key in flags or name != key.replace("_", "-"):
            return None
        if params[key].default is False:  # a boolean flag takes no value
            if has_value:
                return None
            flags[key] = True
            continue
        if not has_value:
            if not words or words[0].startswith("--"):
                return None
            value = words.pop(0)
        # A number reads as one, as typer would pass it (and error messages show it so).
        numeric = "int" in str(params[key].annotation) and value.lstrip("-").isdigit()
        flags[key] = int(value) if numeric else value
    return flags


def main(role: str, argv: Sequence[str]) -> bool:
    """Run the ``role`` daemon if ``argv`` is plain flags; False if typer should read it."""
    run = DAEMONS[role]
    flags = parse_daemon_argv(run, argv)
    if flags is None:
        return False
    run(**flags)
    return True
