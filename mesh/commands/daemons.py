"""``mesh coordinator`` and ``mesh node``: the daemons, run until SIGTERM/SIGINT (how a
daemon is run is ``mesh.commands.serving``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mesh.commands.common import (
    ConfigOption,
    CoordinatorOption,
    InsecureOption,
    KeysOption,
    LogFormatOption,
    LogLevelOption,
    MetricsHostOption,
    MetricsPortOption,
    OtlpEndpointOption,
)
from mesh.commands.serving import (
    advertise_host_of,
    check_exposure,
    curve_of,
    daemon_settings,
    reload_keys,
    run_daemon,
    serve,
)
from mesh.errors import (
    MeshError,
)

if TYPE_CHECKING:
    pass

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
    from mesh.config import COORDINATOR_SETTINGS, default_state_dir
    from mesh.coordinator.daemon import Coordinator, CoordinatorConfig
    from mesh.systemd import notify

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
        log_level=log_level,
        log_format=log_format,
    )
    from mesh.transport.exposure import endpoint_host

    check_exposure("listen on", endpoint_host(s["bind"]), s)
    curve = curve_of(s, ["coordinator"])
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
        )
    )

    def ready(endpoint: str) -> None:
        notify(
            READY=1, MAINPID=os.getpid(), MESH_ENDPOINT=endpoint, STATUS=f"listening on {endpoint}"
        )

    run_daemon(
        "mesh-coordinator",
        None,
        s,
        lambda: serve(daemon.run, ready, on_reload=reload_keys(curve)),
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
    from mesh.commands.service import node_status
    from mesh.config import NODE_SETTINGS, default_state_dir
    from mesh.node.daemon import Node, NodeConfig
    from mesh.protocol.messages import PeerAddress
    from mesh.systemd import notify

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
    from mesh.transport.keys import own_pair_names

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
