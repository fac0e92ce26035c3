"""``mesh run``: a job on an embedded local cluster, start to end."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import Annotated

import anyio
import typer

from mesh.commands.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    JaegerUrlOption,
    KeysOption,
    ModeOption,
    OtlpEndpointOption,
    PlacementOption,
    TraceSampleOption,
    client_keys,
    err,
    fail,
    prepare_job,
)
from mesh.errors import (
    MeshError,
    SchedulingError,
    TransportError,
)

__all__ = ["run"]

#: Where ``mesh run`` serves the dashboard unless told otherwise (Flink's port).
DEFAULT_HTTP = "127.0.0.1:8081"


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
    mode: ModeOption = None,
    keys: KeysOption = None,
    http: Annotated[
        str,
        typer.Option(
            help="serve the dashboard at HOST:PORT (a free port if 8081 is taken; off: none)"
        ),
    ] = DEFAULT_HTTP,
    jaeger_url: JaegerUrlOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no live progress")] = False,
) -> None:
    """Run a job on an embedded local cluster and wait for it to end.

    Ctrl-C takes a savepoint (printed on the last line), then stops the job.
    """
    from mesh.client.drive import Outcome, drive_job
    from mesh.client.launcher import early_launcher
    from mesh.client.local_cluster import LocalCluster
    from mesh.client.sizing import size_cluster
    from mesh.graph.slots import PLACEMENTS

    if nodes < 1:
        raise fail(f"--nodes must be >= 1, got {nodes}", EXIT_USAGE)
    if slots is not None and slots < 1:
        raise fail(f"--slots must be >= 1, got {slots}", EXIT_USAGE)
    if placement is not None and placement not in PLACEMENTS:
        raise fail(f"--placement must be spread or pack, got {placement!r}", EXIT_USAGE)
    submission = prepare_job(
        job_file,
        job,
        parallelism,
        checkpoint_interval=checkpoint_interval,
        restore_from=from_savepoint,
        trace_sample=trace_sample,
        mode=mode,
    )
    try:
        size = size_cluster(submission.graph, nodes, slots)
    except SchedulingError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    per_node = size.slots_per_node
    daemon_args = ["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else []
    keys = client_keys(keys)
    daemon_args += ["--keys", str(keys.resolve())] if keys is not None else []
    coordinator_args = [*(["--placement", placement] if placement else []), *daemon_args]
    coordinator_args += ["--jaeger-url", jaeger_url] if jaeger_url else []
    if http.strip().lower() != "off":
        coordinator_args += ["--http", _free_http_address(http)]
    # The state directory outlives the run when given (savepoints, checkpoints, logs);
    # otherwise a temporary one is removed after a successful run.
    temp_dir = None if state_dir else tempfile.mkdtemp(prefix="mesh-run-")
    directory = state_dir or Path(temp_dir or ".")
    cluster = LocalCluster(
        nodes=nodes,
        slots=per_node,
        state_dir=directory,
        log_level="info",
        coordinator_args=coordinator_args,
        node_args=daemon_args or None,
        launcher=early_launcher(),
    )
    code = EXIT_FAILED
    try:
        try:
            cluster.start()
        except MeshError as exc:
            raise fail(str(exc), EXIT_FAILED) from None
        if not quiet:
            err(
                f"local cluster: coordinator {cluster.address}, "
                f"{nodes} node(s) x {per_node} slot(s)"
            )
            if cluster.http_url:
                err(f"dashboard: {cluster.http_url}/{_token_query(keys)}")
        outcome = anyio.run(
            lambda: drive_job(
                cluster.address,
                submission,
                quiet=quiet,
                state_dir=str(directory.resolve()),
                keys=keys,
            ),
            backend="asyncio",
        )
        code = {
            Outcome.OK: EXIT_OK,
            Outcome.FAILED: EXIT_FAILED,
            Outcome.INTERRUPTED: EXIT_INTERRUPTED,
        }[outcome]
    except TransportError as exc:  # the cluster refused our keys
        err(f"error: {exc}")
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    finally:
        cluster.stop()
        if code == EXIT_OK:
            if temp_dir:
                shutil.rmtree(temp_dir, ignore_errors=True)
        else:  # kept, and said so even with --quiet: it is where to look
            err(
                f"daemon logs: {cluster.log_dir.resolve()}/ — the state directory "
                f"{directory.resolve()} is kept for inspection"
                + (" (a temporary one: delete it when done)" if temp_dir else "")
            )
    raise typer.Exit(code)


def _free_http_address(http: str) -> str:
    """``http``, or the same host on any free port when its port is the default and
    taken (another ``mesh run``, say); a port given on purpose is used as it is."""
    from mesh.coordinator.web.settings import parse_http_address

    try:
        host, port = parse_http_address(http)
    except ValueError as exc:
        raise fail(f"--http: {exc}", EXIT_USAGE) from None
    if http != DEFAULT_HTTP:
        return http
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return f"{host}:0"
    return http


def _token_query(keys: Path | None) -> str:
    """``?token=...`` for the dashboard's URL when the cluster has keys."""
    if keys is None:
        return ""
    from mesh.transport.keys import load_http_token

    try:
        return "?token=" + load_http_token(keys)
    except MeshError:
        return ""
