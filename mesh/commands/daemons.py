"""``mesh coordinator`` and ``mesh node``: the daemons, run until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer

from mesh._excgroups import unwrap
from mesh.commands.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOption,
    CoordinatorOption,
    InsecureOption,
    KeysOption,
    LogFormatOption,
    LogLevelOption,
    MetricsHostOption,
    MetricsPortOption,
    OtlpEndpointOption,
    fail,
)
from mesh.errors import (
    ConfigError,
    MeshError,
)
from mesh.state.lock import StateDirLocked

if TYPE_CHECKING:
    from mesh.config import Setting
    from mesh.telemetry.setup import MetricsServer, Telemetry
    from mesh.transport.curve import Curve

__all__ = ["coordinator", "node"]


# How long a daemon's graceful stop (its ``on_stop``) may take before it is cut short.
_GRACEFUL_STOP_S = 15.0


def _serve(
    daemon_run: Callable[..., Coroutine[Any, Any, None]],
    on_ready: Callable[[Any], None],
    on_stop: Callable[[], Coroutine[Any, Any, None]] | None = None,
    *,
    starting: str | None = None,
    status: Callable[[], str] | None = None,
    on_reload: Callable[[], object] | None = None,
) -> None:
    """Run a daemon until SIGTERM/SIGINT; returns after a clean stop.

    The first signal runs ``on_stop`` (bounded by ``_GRACEFUL_STOP_S``) before the daemon
    is cancelled; a second signal cancels it at once. Under systemd: until ready, the
    ``starting`` status goes out with more start-up time; once ready, ``status()`` is
    sent whenever it changes; watchdog pings go out if systemd asks for them. SIGHUP calls
    ``on_reload``.
    """
    from mesh.commands.service import keep_starting, report_status, send_watchdog_pings
    from mesh.systemd import EXTEND_TIMEOUT_USEC, notify, watchdog_period_s

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            watchdog_s = watchdog_period_s(os.environ, os.getpid())
            if watchdog_s is not None:
                tg.start_soon(send_watchdog_pings, watchdog_s)
            still_starting = anyio.CancelScope()
            if starting is not None:

                async def keep_starting_until_ready() -> None:
                    with still_starting:
                        await keep_starting(starting)

                notify(STATUS=starting, EXTEND_TIMEOUT_USEC=EXTEND_TIMEOUT_USEC)
                tg.start_soon(keep_starting_until_ready)

            async def stop_gracefully() -> None:
                assert on_stop is not None
                with anyio.move_on_after(_GRACEFUL_STOP_S):
                    await on_stop()
                tg.cancel_scope.cancel()

            async def stop_on_signal() -> None:
                stopping = False
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        notify(STOPPING=1)
                        if on_stop is None or stopping:
                            tg.cancel_scope.cancel()
                            return
                        stopping = True
                        tg.start_soon(stop_gracefully)

            async def reload_on_signal() -> None:
                assert on_reload is not None
                with anyio.open_signal_receiver(signal.SIGHUP) as signals:
                    async for _ in signals:
                        on_reload()

            tg.start_soon(stop_on_signal)
            if on_reload is not None:
                tg.start_soon(reload_on_signal)
            ready = await tg.start(daemon_run)
            still_starting.cancel()
            on_ready(ready)
            if status is not None:
                tg.start_soon(report_status, status)

    try:
        anyio.run(main, backend="asyncio")
    except BaseExceptionGroup as group:
        raise unwrap(group) from None


def _daemon_settings(
    specs: tuple[Setting, ...], role: str, config_file: Path | None, **flags: object
) -> dict[str, Any]:
    """A daemon's effective settings (defaults < file < env < flags), with logging set
    up; a bad setting exits with a usage error naming it."""
    from mesh.config import resolve_settings
    from mesh.logs import setup_logging
    from mesh.telemetry.endpoint import traces_endpoint

    try:
        settings = resolve_settings(specs, role, flags=flags, config_file=config_file)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    trace_ids = None
    if traces_endpoint(settings["otlp_endpoint"]) is not None:
        from mesh.telemetry.logs import TraceIdFilter

        trace_ids = TraceIdFilter()
    setup_logging(
        settings["log_level"], role=role, log_format=settings["log_format"], trace_ids=trace_ids
    )
    return settings


def _curve(settings: dict[str, Any], names: list[str]) -> Curve | None:
    """The daemon's CURVE keys (``keys`` setting), or None; a missing key exits 2."""
    if settings["keys"] is None:
        return None
    from mesh.transport.curve import Curve

    try:
        return Curve.load(settings["keys"], names, serve=True)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def _check_exposure(what: str, host: str, settings: dict[str, Any]) -> None:
    """Exit 2 if a keyless daemon would ``what`` a non-loopback ``host``."""
    from mesh.transport.exposure import exposure_error

    error = exposure_error(
        what, host, keys=settings["keys"] is not None, insecure=settings["insecure"]
    )
    if error is not None:
        raise fail(error, EXIT_USAGE)


def _reload(curve: Curve | None) -> Callable[[], object] | None:
    """What SIGHUP does: re-read the allowed keys."""
    return curve.allow.reload if curve is not None and curve.allow is not None else None


def _install_metrics(
    service: str, instance_id: str | None, settings: dict[str, Any]
) -> MetricsServer | None:
    """The daemon's metrics: a Prometheus endpoint if ``metrics_port`` is set, an OTLP
    exporter if an OTLP endpoint is (the SDK is imported only then)."""
    from mesh.telemetry.endpoint import metrics_endpoint

    if not settings["metrics_port"] and metrics_endpoint(settings["otlp_endpoint"]) is None:
        return None
    from mesh.telemetry.setup import install_metrics

    try:
        return install_metrics(
            service,
            instance_id,
            settings["metrics_host"],
            settings["metrics_port"],
            settings["otlp_endpoint"],
        )
    except OSError as exc:
        raise fail(
            f"cannot serve metrics on {settings['metrics_host']}:{settings['metrics_port']}: {exc}",
            EXIT_FAILED,
        ) from None


def _install_tracing(
    service: str, instance_id: str | None, endpoint: str | None
) -> Telemetry | None:
    """The daemon's tracer provider (the SDK is imported only when traces are exported)."""
    from mesh.telemetry.endpoint import traces_endpoint

    if traces_endpoint(endpoint) is None:
        return None
    from mesh.telemetry.setup import install_tracing

    return install_tracing(service, instance_id, endpoint)


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
    """
    from mesh.config import COORDINATOR_SETTINGS, default_state_dir
    from mesh.coordinator.daemon import Coordinator, CoordinatorConfig
    from mesh.systemd import notify

    s = _daemon_settings(
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

    _check_exposure("listen on", endpoint_host(s["bind"]), s)
    curve = _curve(s, ["coordinator"])
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
            curve=curve,
        )
    )

    def ready(endpoint: str) -> None:
        notify(
            READY=1, MAINPID=os.getpid(), MESH_ENDPOINT=endpoint, STATUS=f"listening on {endpoint}"
        )

    telemetry = _install_tracing("mesh-coordinator", None, s["otlp_endpoint"])
    metrics = _install_metrics("mesh-coordinator", None, s)
    try:
        _serve(daemon.run, ready, on_reload=_reload(curve))
    except StateDirLocked as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()
        if metrics is not None:
            metrics.shutdown()


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
    """
    from mesh.commands.service import node_status
    from mesh.config import NODE_SETTINGS, default_state_dir
    from mesh.node.daemon import Node, NodeConfig
    from mesh.protocol.messages import PeerAddress
    from mesh.systemd import notify

    s = _daemon_settings(
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

    advertised = _advertise_host(s)
    _check_exposure("listen on", s["bind_host"], s)
    _check_exposure("advertise", advertised, s)
    curve = _curve(s, own_pair_names("node", s["node_id"]))
    daemon = Node(
        NodeConfig(
            coordinator=s["coordinator"],
            slots=s["slots"],
            state_dir=s["state_dir"] or default_state_dir("node"),
            bind_host=s["bind_host"],
            advertise_host=advertised,
            node_id=s["node_id"],
            max_frame_bytes=s["max_frame_size"],
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

    telemetry = _install_tracing("mesh-node", daemon.node_id, s["otlp_endpoint"])
    metrics = _install_metrics("mesh-node", daemon.node_id, s)
    try:
        _serve(
            daemon.run,
            ready,
            daemon.leave,
            starting=f"waiting for the coordinator at {s['coordinator']}",
            status=status,
            on_reload=_reload(curve),
        )
    except StateDirLocked as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except (OSError, MeshError) as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()
        if metrics is not None:
            metrics.shutdown()


def _advertise_host(settings: dict[str, Any]) -> str:
    """The host peers dial: ``advertise_host``; else ``bind_host``, unless that is every
    interface: then the address this host reaches the coordinator from. Never a
    wildcard (exit 2)."""
    from mesh.transport.exposure import is_wildcard, route_source, wildcard_advertise

    given = settings["advertise_host"]
    if given is not None:
        error = wildcard_advertise(given)
        if error is not None:
            raise fail(error, EXIT_USAGE)
        return str(given)
    if not is_wildcard(settings["bind_host"]):
        return str(settings["bind_host"])
    try:
        return route_source(settings["coordinator"])
    except OSError as exc:
        raise fail(
            f"bind_host = {settings['bind_host']!r} needs --advertise-host: no route to the "
            f"coordinator at {settings['coordinator']} to pick an address from ({exc})",
            EXIT_USAGE,
        ) from None
