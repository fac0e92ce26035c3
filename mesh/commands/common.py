"""What the subcommands share: exit codes, option types, error output, reaching the
coordinator, and preparing a job file for submission."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer

from mesh.commands.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    fail,
)
from mesh.errors import (
    ConfigError,
    GraphError,
    JobCodeError,
    RemoteError,
    TransportError,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigOption",
    "CoordinatorOption",
    "InsecureOption",
    "JaegerUrlOption",
    "KeysOption",
    "LogFormatOption",
    "LogLevelOption",
    "MetricsHostOption",
    "MetricsPortOption",
    "ModeOption",
    "OtlpEndpointOption",
    "PlacementOption",
    "TraceSampleOption",
    "check_reachable",
    "client_keys",
    "coordinator_address",
    "err",
    "fail",
    "prepare_job",
    "run_client",
]


T = TypeVar("T")

CoordinatorOption = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        help="coordinator address [env MESH_COORDINATOR; default tcp://127.0.0.1:5550]",
    ),
]
KeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="CURVE keys directory (mesh keys generate): authenticated, encrypted "
        "sockets [env MESH_KEYS; default: none]",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="allow a non-loopback address without --keys (only on a network you trust) "
        "[env MESH_INSECURE; default off]",
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML file with settings (flags win)")
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(
        "--log-level", help="debug, info, warning or error [env MESH_LOG_LEVEL; default info]"
    ),
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
JaegerUrlOption = Annotated[
    str | None,
    typer.Option(
        "--jaeger-url",
        help="Jaeger's UI, like http://127.0.0.1:16686: the dashboard links checkpoints and "
        "failovers to their traces [env MESH_JAEGER_URL; default none]",
    ),
]
PlacementOption = Annotated[
    str | None,
    typer.Option(help="spread (subtasks evenly over nodes) or pack (fill a node first)"),
]


class Mode(StrEnum):
    """Job modes (``Job(mode=...)``)."""

    streaming = "streaming"
    batch = "batch"


ModeOption = Annotated[
    Mode | None,
    typer.Option(
        help="streaming, or batch: bounded input run to its end, final results only, no "
        "checkpoints (overrides the job's mode)"
    ),
]

TraceSampleOption = Annotated[
    float | None,
    typer.Option(
        help="trace this fraction of source records end to end, 0 to 1 (overrides the "
        "job's trace_sample; traces go where the daemons' --otlp-endpoint says)"
    ),
]


def coordinator_address(flag: str | None) -> str:
    from mesh.client.client import DEFAULT_COORDINATOR
    from mesh.transport.sockets import parse_endpoint

    value = flag or os.environ.get("MESH_COORDINATOR") or DEFAULT_COORDINATOR
    try:
        return str(parse_endpoint(value))
    except ValueError as exc:
        origin = "--coordinator" if flag else "MESH_COORDINATOR"
        raise fail(f"coordinator = {value!r} (from {origin}) is not allowed: {exc}", 2) from None


def client_keys(flag: Path | None) -> Path | None:
    """The client's keys directory: ``--keys``, else ``MESH_KEYS``, else none."""
    value = flag or os.environ.get("MESH_KEYS")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "--keys" if flag else "MESH_KEYS"
        raise fail(f"keys = {str(value)!r} (from {origin}) is not a directory", EXIT_USAGE)
    return path


def check_reachable(address: str) -> None:
    """Fail fast, with a clear message, when nothing listens at ``address``."""
    import socket

    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as exc:
        raise fail(
            f"cannot reach the coordinator at {address}: {exc.strerror or exc} "
            "(is it running? set --coordinator or MESH_COORDINATOR)",
            EXIT_FAILED,
        ) from None


def run_client(address: str, action: Callable[[Any], Awaitable[T]], keys: Path | None = None) -> T:
    from mesh.client.client import open_client

    check_reachable(address)

    async def go() -> T:
        async with open_client(address, timeout_s=10.0, keys=keys) as client:
            return await action(client)

    try:
        return anyio.run(go, backend="asyncio")
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except TransportError as exc:  # a refused key, or the wrong server key
        raise fail(str(exc), EXIT_FAILED) from None
    except TimeoutError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    except RemoteError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


def prepare_job(
    job_file: Path,
    job: str | None,
    parallelism: int | None,
    *,
    checkpoint_interval: str | None = None,
    restore_from: Path | None = None,
    trace_sample: float | None = None,
    mode: Mode | None = None,
) -> Any:
    from mesh.client.client import prepare_submission
    from mesh.time.durations import parse_duration

    if parallelism is not None and parallelism < 1:
        raise fail(f"--parallelism must be >= 1, got {parallelism}", EXIT_USAGE)
    interval = None
    if checkpoint_interval is not None:
        try:
            interval = parse_duration(checkpoint_interval, what="--checkpoint-interval")
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        if interval <= 0:
            raise fail("--checkpoint-interval must be above zero", EXIT_USAGE)
    if trace_sample is not None and not 0 <= trace_sample <= 1:
        raise fail(f"--trace-sample must be from 0 to 1, got {trace_sample}", EXIT_USAGE)
    if restore_from is not None and not restore_from.exists():
        raise fail(f"--from-savepoint: {restore_from} does not exist", EXIT_USAGE)
    try:
        return prepare_submission(
            job_file,
            job_name=job,
            parallelism=parallelism,
            checkpoint_interval_ms=interval,
            trace_sample=trace_sample,
            restore_from=restore_from,
            mode=mode.value if mode is not None else None,
        )
    except (JobCodeError, GraphError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
