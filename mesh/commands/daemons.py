"""``mesh coordinator`` and ``mesh node``: the daemons, run until SIGTERM/SIGINT (how a
daemon is run is ``mesh.commands.serving``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mesh.commands.common import (
    ConfigOption,
    CoordinatorOption,
    InsecureOption,
    JaegerUrlOption,
    KeysOption,
    LogFormatOption,
    LogLevelOption,
    MetricsHostOption,
    MetricsPortOption,
    OtlpEndpointOption,
)

__all__ = ["coordinator", "node"]


def coordinator(
    config: ConfigOption = None,
    bind: Annotated[
        str | None,
        typer.Option(help="address to listen on [env MESH_BIND; default tcp://127.0.0.1:5550]"),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="directory for its state [env MESH_STATE_DIR; default "
            "$XDG_STATE_HOME/mesh/coordinator, ~/.local/state/mesh/coordinator]"
        ),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            help="where checkpoints go [env MESH_CHECKPOINT_DIR; default STATE_DIR/checkpoints]"
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            help="spread (subtasks evenly over nodes) or pack (fill a node first) "
            "[env MESH_PLACEMENT; default spread]"
        ),
    ] = None,
    slot_timeout: Annotated[
        str | None,
        typer.Option(
            help="a job waits this long for slots, like 5m [env MESH_SLOT_TIMEOUT; default 5m]"
        ),
    ] = None,
    keys: KeysOption = None,
    insecure: InsecureOption = False,
    otlp_endpoint: OtlpEndpointOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = None,
    http: Annotated[
        str | None,
        typer.Option(
            help="serve the dashboard and REST API at HOST:PORT, like 127.0.0.1:8081 (port 0: "
            "any free one); with --keys, requests need KEYS/http.token [env MESH_HTTP; "
            "default off]"
        ),
    ] = None,
    http_tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="serve HTTPS with this certificate (PEM) [env MESH_HTTP_TLS_CERT; default none]"
        ),
    ] = None,
    http_tls_key: Annotated[
        Path | None,
        typer.Option(
            help="the private key (PEM) of --http-tls-cert [env MESH_HTTP_TLS_KEY; default none]"
        ),
    ] = None,
    jaeger_url: JaegerUrlOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a coordinator daemon.

    Each setting comes from its flag, else its MESH_* variable, else the --config file,
    else its default (mesh config show coordinator prints them, and where each came
    from). Without --keys it listens on loopback addresses only (unless --insecure).
    With --keys, SIGHUP re-reads the allowed keys (KEYS/public).

    \b
    Set in the config file or environment only:
      heartbeat_interval  how often nodes report
                          [env MESH_HEARTBEAT_INTERVAL; default 1s]
      heartbeat_timeout   silence after which a node is lost
                          [env MESH_HEARTBEAT_TIMEOUT; default 5s]
      checkpoint_timeout  a checkpoint taking longer is aborted
                          [env MESH_CHECKPOINT_TIMEOUT; default 10m]
      checkpoint_min_pause  least time between two checkpoints
                          [env MESH_CHECKPOINT_MIN_PAUSE; default 0s]
      tolerable_checkpoint_failures  consecutive failed checkpoints a job survives
                          [env MESH_TOLERABLE_CHECKPOINT_FAILURES; default 3]
      retained_checkpoints  completed checkpoints kept per job
                          [env MESH_RETAINED_CHECKPOINTS; default 3]
      max_message_size    largest message part taken from a node or client
                          [env MESH_MAX_MESSAGE_SIZE; default 64MiB]
      max_bad_messages    malformed messages after which a connection is cut (0: never)
                          [env MESH_MAX_BAD_MESSAGES; default 100]
    """
    from mesh.commands.daemon_main import run_coordinator

    run_coordinator(
        config=config,
        bind=bind,
        state_dir=state_dir,
        checkpoint_dir=checkpoint_dir,
        placement=placement,
        slot_timeout=slot_timeout,
        keys=keys,
        insecure=insecure,
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


def node(
    config: ConfigOption = None,
    coordinator: CoordinatorOption = None,
    slots: Annotated[
        int | None, typer.Option(help="slots this node offers [env MESH_SLOTS; default 1]")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="directory for its state [env MESH_STATE_DIR; default "
            "$XDG_STATE_HOME/mesh/node, ~/.local/state/mesh/node]"
        ),
    ] = None,
    bind_host: Annotated[
        str | None,
        typer.Option(
            help="interface for the data and credit ports, * for all "
            "[env MESH_BIND_HOST; default 127.0.0.1]"
        ),
    ] = None,
    advertise_host: Annotated[
        str | None,
        typer.Option(
            help="host name peers dial to reach this node "
            "[env MESH_ADVERTISE_HOST; default BIND_HOST]"
        ),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(help="stable id of this node [env MESH_NODE_ID; default HOSTNAME-PID]"),
    ] = None,
    keys: KeysOption = None,
    insecure: InsecureOption = False,
    otlp_endpoint: OtlpEndpointOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a node daemon.

    Each setting comes from its flag, else its MESH_* variable, else the --config file,
    else its default (mesh config show node prints them, and where each came from).
    Without --keys it binds and advertises loopback addresses only (unless --insecure).
    Bound to every interface (--bind-host 0.0.0.0) without --advertise-host, it
    advertises the address it reaches the coordinator from. With --keys, SIGHUP
    re-reads the allowed keys (KEYS/public).

    \b
    Set in the config file or environment only:
      max_frame_size      largest data frame part taken from another node
                          [env MESH_MAX_FRAME_SIZE; default 64MiB]
      max_bad_messages    malformed or forged messages after which a connection is cut
                          (0: never) [env MESH_MAX_BAD_MESSAGES; default 100]
    """
    from mesh.commands.daemon_main import run_node

    run_node(
        config=config,
        coordinator=coordinator,
        slots=slots,
        state_dir=state_dir,
        bind_host=bind_host,
        advertise_host=advertise_host,
        node_id=node_id,
        keys=keys,
        insecure=insecure,
        otlp_endpoint=otlp_endpoint,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        log_level=log_level,
        log_format=log_format,
    )
