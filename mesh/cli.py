"""The ``mesh`` command line.

Exit codes: 0 success, 1 the job failed (or a daemon could not run), 2 a usage,
configuration or job-file error, 130 interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import orjson
import typer

from mesh._excgroups import unwrap
from mesh._version import __version__
from mesh.errors import (
    ConfigError,
    GraphError,
    JobCodeError,
    MeshError,
    RemoteError,
    SchedulingError,
)
from mesh.protocol.states import FINAL_JOB_STATES

if TYPE_CHECKING:
    from mesh.config import Setting
    from mesh.telemetry.setup import MetricsServer, Telemetry

__all__ = ["app", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="mesh: a distributed stream processor for Python.",
)

T = TypeVar("T")

CoordinatorOption = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        help="coordinator address [env MESH_COORDINATOR; default tcp://127.0.0.1:5550]",
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML file with settings (flags win)")
]
LogLevelOption = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error")
]
OtlpEndpointOption = Annotated[
    str | None,
    typer.Option(
        "--otlp-endpoint",
        help="export traces and metrics to this OTLP/HTTP collector, like "
        "http://127.0.0.1:4318 [env MESH_OTLP_ENDPOINT, or the standard "
        "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT; default: none]",
    ),
]
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="text (plain lines, journald-friendly) or json (one object per line) "
        "[env MESH_LOG_FORMAT; default text]",
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="serve Prometheus metrics on this port at /metrics [env MESH_METRICS_PORT; "
        "default 0: off]",
    ),
]
MetricsHostOption = Annotated[
    str | None,
    typer.Option(
        "--metrics-host",
        help="interface for --metrics-port [env MESH_METRICS_HOST; default 127.0.0.1]",
    ),
]
PlacementOption = Annotated[
    str | None,
    typer.Option(help="spread (subtasks evenly over nodes) or pack (fill a node first)"),
]
TraceSampleOption = Annotated[
    float | None,
    typer.Option(
        help="trace this fraction of source records end to end, 0 to 1 (overrides the "
        "job's trace_sample; traces go where the daemons' --otlp-endpoint says)"
    ),
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _fail(message: str, code: int) -> typer.Exit:
    _err(f"error: {message}")
    return typer.Exit(code)


def _coordinator_address(flag: str | None) -> str:
    from mesh.client.client import DEFAULT_COORDINATOR
    from mesh.transport.sockets import parse_endpoint

    value = flag or os.environ.get("MESH_COORDINATOR") or DEFAULT_COORDINATOR
    try:
        return str(parse_endpoint(value))
    except ValueError as exc:
        origin = "--coordinator" if flag else "MESH_COORDINATOR"
        raise _fail(f"coordinator = {value!r} (from {origin}) is not allowed: {exc}", 2) from None


def _check_reachable(address: str) -> None:
    """Fail fast, with a clear message, when nothing listens at ``address``."""
    import socket

    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as exc:
        raise _fail(
            f"cannot reach the coordinator at {address}: {exc.strerror or exc} "
            "(is it running? set --coordinator or MESH_COORDINATOR)",
            EXIT_FAILED,
        ) from None


def _run_client(address: str, action: Callable[[Any], Awaitable[T]]) -> T:
    from mesh.client.client import open_client

    _check_reachable(address)

    async def go() -> T:
        async with open_client(address, timeout_s=10.0) as client:
            return await action(client)

    try:
        return anyio.run(go, backend="asyncio")
    except TimeoutError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    except RemoteError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None


# -- daemons ---------------------------------------------------------------------------------


# How long a daemon's graceful stop (its ``on_stop``) may take before it is cut short.
_GRACEFUL_STOP_S = 15.0


def _serve(
    daemon_run: Callable[..., Coroutine[Any, Any, None]],
    on_ready: Callable[[Any], None],
    on_stop: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run a daemon until SIGTERM/SIGINT; returns after a clean stop.

    The first signal runs ``on_stop`` (bounded by ``_GRACEFUL_STOP_S``) before the daemon
    is cancelled; a second signal cancels it at once.
    """
    from mesh.systemd import notify

    async def main() -> None:
        async with anyio.create_task_group() as tg:

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

            tg.start_soon(stop_on_signal)
            ready = await tg.start(daemon_run)
            on_ready(ready)

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
        raise _fail(str(exc), EXIT_USAGE) from None
    trace_ids = None
    if traces_endpoint(settings["otlp_endpoint"]) is not None:
        from mesh.telemetry.logs import TraceIdFilter

        trace_ids = TraceIdFilter()
    setup_logging(
        settings["log_level"], role=role, log_format=settings["log_format"], trace_ids=trace_ids
    )
    return settings


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
        raise _fail(
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


@app.command()
def coordinator(
    config: ConfigOption = None,
    bind: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="directory for its state")] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="where checkpoints go [default: STATE_DIR/checkpoints]")
    ] = None,
    placement: PlacementOption = None,
    slot_timeout: Annotated[
        str | None, typer.Option(help="a job waits this long for slots, like 5m")
    ] = None,
    otlp_endpoint: OtlpEndpointOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a coordinator daemon."""
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
        otlp_endpoint=otlp_endpoint,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        log_level=log_level,
        log_format=log_format,
    )
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
        )
    )

    def ready(endpoint: str) -> None:
        notify(
            READY=1, MAINPID=os.getpid(), MESH_ENDPOINT=endpoint, STATUS=f"listening on {endpoint}"
        )

    telemetry = _install_tracing("mesh-coordinator", None, s["otlp_endpoint"])
    metrics = _install_metrics("mesh-coordinator", None, s)
    try:
        _serve(daemon.run, ready)
    except OSError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()
        if metrics is not None:
            metrics.shutdown()


@app.command()
def node(
    config: ConfigOption = None,
    coordinator: CoordinatorOption = None,
    slots: Annotated[int | None, typer.Option(help="slots this node offers")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="directory for its state")] = None,
    bind_host: Annotated[str | None, typer.Option(help="interface for data ports")] = None,
    advertise_host: Annotated[str | None, typer.Option(help="host peers dial")] = None,
    node_id: Annotated[str | None, typer.Option(help="stable node id")] = None,
    otlp_endpoint: OtlpEndpointOption = None,
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a node daemon."""
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
        otlp_endpoint=otlp_endpoint,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        log_level=log_level,
        log_format=log_format,
    )
    daemon = Node(
        NodeConfig(
            coordinator=s["coordinator"],
            slots=s["slots"],
            state_dir=s["state_dir"] or default_state_dir("node"),
            bind_host=s["bind_host"],
            advertise_host=s["advertise_host"],
            node_id=s["node_id"],
        )
    )

    def ready(address: PeerAddress) -> None:
        notify(
            READY=1,
            MAINPID=os.getpid(),
            MESH_NODE_ID=address.node_id,
            MESH_DATA_ENDPOINT=address.data_endpoint,
            MESH_CONTROL_ENDPOINT=address.control_endpoint,
            STATUS=f"node {address.node_id} registered",
        )

    telemetry = _install_tracing("mesh-node", daemon.node_id, s["otlp_endpoint"])
    metrics = _install_metrics("mesh-node", daemon.node_id, s)
    try:
        _serve(daemon.run, ready, daemon.leave)
    except (OSError, MeshError) as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    finally:
        if telemetry is not None:
            telemetry.shutdown()
        if metrics is not None:
            metrics.shutdown()


# -- jobs -------------------------------------------------------------------------------------


def _prepare(
    job_file: Path,
    job: str | None,
    parallelism: int | None,
    *,
    checkpoint_interval: str | None = None,
    restore_from: Path | None = None,
    trace_sample: float | None = None,
) -> Any:
    from mesh.client.client import prepare_submission
    from mesh.time.durations import parse_duration

    if parallelism is not None and parallelism < 1:
        raise _fail(f"--parallelism must be >= 1, got {parallelism}", EXIT_USAGE)
    interval = None
    if checkpoint_interval is not None:
        try:
            interval = parse_duration(checkpoint_interval, what="--checkpoint-interval")
        except ValueError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
        if interval <= 0:
            raise _fail("--checkpoint-interval must be above zero", EXIT_USAGE)
    if trace_sample is not None and not 0 <= trace_sample <= 1:
        raise _fail(f"--trace-sample must be from 0 to 1, got {trace_sample}", EXIT_USAGE)
    if restore_from is not None and not restore_from.exists():
        raise _fail(f"--from-savepoint: {restore_from} does not exist", EXIT_USAGE)
    try:
        return prepare_submission(
            job_file,
            job_name=job,
            parallelism=parallelism,
            checkpoint_interval_ms=interval,
            trace_sample=trace_sample,
            restore_from=restore_from,
        )
    except (JobCodeError, GraphError) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@app.command()
def plan(
    job_file: Annotated[Path, typer.Argument(help="the job's Python file")],
    job: Annotated[str | None, typer.Option(help="which Job, if the file has several")] = None,
    parallelism: Annotated[int | None, typer.Option(help="default parallelism")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, dot (Graphviz) or mermaid")] = "text",
) -> None:
    """Print the job's logical graph and its chained (task) graph, without running it."""
    from mesh.client.client import build_graph
    from mesh.client.job_errors import job_file_error_line
    from mesh.client.plan import PLAN_FORMATS, format_plan

    if fmt not in PLAN_FORMATS:
        raise _fail(f"--format must be one of {', '.join(PLAN_FORMATS)}, got {fmt!r}", EXIT_USAGE)
    if parallelism is not None and parallelism < 1:
        raise _fail(f"--parallelism must be >= 1, got {parallelism}", EXIT_USAGE)
    try:
        graph = build_graph(job_file, job_name=job, parallelism=parallelism)
    except (JobCodeError, GraphError) as exc:
        raise _fail(job_file_error_line(job_file, exc), EXIT_USAGE) from None
    typer.echo(format_plan(graph, fmt), nl=False)


@app.command()
def submit(
    job_file: Annotated[Path, typer.Argument(help="the job's Python file")],
    job: Annotated[str | None, typer.Option(help="which Job, if the file has several")] = None,
    parallelism: Annotated[int | None, typer.Option(help="default parallelism")] = None,
    from_savepoint: Annotated[
        Path | None,
        typer.Option(help="start from this savepoint (or checkpoint, or job checkpoint dir)"),
    ] = None,
    checkpoint_interval: Annotated[
        str | None, typer.Option(help="checkpoint every D (overrides the job's setting)")
    ] = None,
    trace_sample: TraceSampleOption = None,
    coordinator: CoordinatorOption = None,
) -> None:
    """Submit a job to a running cluster; prints the job id on the last line."""
    address = _coordinator_address(coordinator)
    submission = _prepare(
        job_file,
        job,
        parallelism,
        checkpoint_interval=checkpoint_interval,
        restore_from=from_savepoint,
        trace_sample=trace_sample,
    )
    reply = _run_client(address, lambda c: c.submit_job(submission))
    if reply.waiting:
        _err(f"job {reply.job_id} waits for slots: {reply.waiting}")
    typer.echo(reply.job_id)


@app.command("list")
def list_jobs(
    coordinator: CoordinatorOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """One line per job: id, name, state, uptime."""
    from mesh.client.render import format_jobs

    jobs = _run_client(_coordinator_address(coordinator), lambda c: c.list_jobs())
    typer.echo(orjson.dumps(jobs).decode() if json else format_jobs(jobs))


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    coordinator: CoordinatorOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until the job ends")] = False,
) -> None:
    """One job's graph, placement (node/slot per subtask) and record counts.

    With --watch it refreshes every second until the job ends: in place on a terminal,
    and on a pipe as plain text every few seconds and whenever the job's state changes
    (with --json, one JSON object per line every second).
    """
    from mesh.client.live import TextDisplay
    from mesh.client.render import format_status

    address = _coordinator_address(coordinator)

    async def watch_loop(client: Any) -> None:
        display = TextDisplay(sys.stdout) if watch and not json else None
        try:
            while True:
                st = await client.status(job_id)
                final = st["state"] in FINAL_JOB_STATES
                if json:
                    typer.echo(orjson.dumps(st).decode())
                elif display is not None:
                    display.show(format_status(st), st["state"], final=final)
                else:
                    typer.echo(format_status(st))
                if not watch or final:
                    return
                await anyio.sleep(1.0)
        finally:
            if display is not None:
                display.close()

    try:
        _run_client(address, watch_loop)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    coordinator: CoordinatorOption = None,
    savepoint: Annotated[
        bool, typer.Option("--savepoint", help="take a savepoint first; prints its path last")
    ] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where the savepoint goes")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the job to stop")] = 30.0,
) -> None:
    """Stop a job and wait until it is stopped (its slots are free again)."""
    address = _coordinator_address(coordinator)
    target = str(directory.resolve()) if directory else None

    async def go(client: Any) -> list[str]:
        lines = []
        if savepoint:
            path = await client.savepoint(job_id, directory=target, cancel=True)
        else:
            await client.cancel(job_id)
        with anyio.move_on_after(timeout):
            while True:
                st = await client.status(job_id)
                if st["state"] in FINAL_JOB_STATES:
                    lines.append(f"job {st['job_id']} {st['state']}")
                    break
                await anyio.sleep(0.2)
        if not lines:
            lines.append(f"job {job_id} still stopping after {timeout:g}s")
        if savepoint:
            lines.append(path)
        return lines

    typer.echo("\n".join(_run_client(address, go)))


@app.command()
def savepoint(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where the savepoint goes")
    ] = None,
    coordinator: CoordinatorOption = None,
) -> None:
    """Take a savepoint of a running job; prints its path on the last line."""
    target = str(directory.resolve()) if directory else None
    typer.echo(
        _run_client(
            _coordinator_address(coordinator), lambda c: c.savepoint(job_id, directory=target)
        )
    )


@app.command()
def checkpoints(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    coordinator: CoordinatorOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """A job's completed (and failed) checkpoints and savepoints with size and duration."""
    from mesh.client.render import format_checkpoints

    address = _coordinator_address(coordinator)

    async def go(client: Any) -> list[dict[str, Any]]:
        return list(await client.checkpoints(job_id))  # the coordinator resolves a prefix

    found = _run_client(address, go)
    typer.echo(orjson.dumps(found).decode() if json else format_checkpoints(found))


@app.command()
def nodes(
    coordinator: CoordinatorOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Registered nodes with their slots and last heartbeat."""
    from mesh.client.render import format_nodes

    found = _run_client(_coordinator_address(coordinator), lambda c: c.nodes())
    typer.echo(orjson.dumps(found).decode() if json else format_nodes(found))


@app.command()
def run(
    job_file: Annotated[Path, typer.Argument(help="the job's Python file")],
    job: Annotated[str | None, typer.Option(help="which Job, if the file has several")] = None,
    nodes: Annotated[int, typer.Option(help="node processes to start")] = 2,
    slots: Annotated[int | None, typer.Option(help="slots per node (default: enough)")] = None,
    parallelism: Annotated[int | None, typer.Option(help="default parallelism")] = None,
    checkpoint_interval: Annotated[
        str | None, typer.Option(help="checkpoint every D, like 1s (overrides the job)")
    ] = None,
    from_savepoint: Annotated[
        Path | None, typer.Option(help="start from this savepoint or checkpoint")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="keep the cluster's state, checkpoints and logs here"),
    ] = None,
    placement: PlacementOption = None,
    otlp_endpoint: OtlpEndpointOption = None,
    trace_sample: TraceSampleOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
) -> None:
    """Run a job on an embedded local cluster and wait for it to end.

    Ctrl-C takes a savepoint (printed on the last line), then stops the job.
    """
    from mesh.client.drive import Outcome, drive_job
    from mesh.client.local_cluster import LocalCluster
    from mesh.client.sizing import size_cluster
    from mesh.graph.slots import PLACEMENTS

    if nodes < 1:
        raise _fail(f"--nodes must be >= 1, got {nodes}", EXIT_USAGE)
    if slots is not None and slots < 1:
        raise _fail(f"--slots must be >= 1, got {slots}", EXIT_USAGE)
    if placement is not None and placement not in PLACEMENTS:
        raise _fail(f"--placement must be spread or pack, got {placement!r}", EXIT_USAGE)
    submission = _prepare(
        job_file,
        job,
        parallelism,
        checkpoint_interval=checkpoint_interval,
        restore_from=from_savepoint,
        trace_sample=trace_sample,
    )
    try:
        size = size_cluster(submission.graph, nodes, slots)
    except SchedulingError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    per_node = size.slots_per_node
    tracing = ["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []
    # The state directory outlives the run when given (savepoints, checkpoints, logs);
    # otherwise a temporary one is removed after a successful run.
    temp_dir = None if state_dir else tempfile.mkdtemp(prefix="mesh-run-")
    directory = state_dir or Path(temp_dir or ".")
    cluster = LocalCluster(
        nodes=nodes,
        slots=per_node,
        state_dir=directory,
        log_level="info",
        coordinator_args=[*(["--placement", placement] if placement else []), *tracing],
        node_args=tracing or None,
    )
    code = EXIT_FAILED
    try:
        try:
            cluster.start()
        except MeshError as exc:
            raise _fail(str(exc), EXIT_FAILED) from None
        if not quiet:
            _err(
                f"local cluster: coordinator {cluster.address}, "
                f"{nodes} node(s) x {per_node} slot(s)"
            )
        outcome = anyio.run(
            lambda: drive_job(
                cluster.address, submission, quiet=quiet, state_dir=str(directory.resolve())
            ),
            backend="asyncio",
        )
        code = {
            Outcome.OK: EXIT_OK,
            Outcome.FAILED: EXIT_FAILED,
            Outcome.INTERRUPTED: EXIT_INTERRUPTED,
        }[outcome]
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    finally:
        cluster.stop()
        if code == EXIT_OK:
            if temp_dir:
                shutil.rmtree(temp_dir, ignore_errors=True)
        else:  # kept, and said so even with --quiet: it is where to look
            _err(
                f"daemon logs: {cluster.log_dir.resolve()}/ — the state directory "
                f"{directory.resolve()} is kept for inspection"
                + (" (a temporary one: delete it when done)" if temp_dir else "")
            )
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mesh {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    """mesh: a distributed stream processor for Python."""


def main() -> None:
    """The console script."""
    app()
