"""The client commands about jobs and nodes of a running cluster: ``submit``, ``list``,
``status``, ``cancel``, ``savepoint``, ``checkpoints`` and ``nodes``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import orjson
import typer

from mesh.commands.common import (
    EXIT_INTERRUPTED,
    CoordinatorOption,
    KeysOption,
    ModeOption,
    TraceSampleOption,
    client_keys,
    coordinator_address,
    err,
    prepare_job,
    run_client,
)
from mesh.protocol.states import FINAL_JOB_STATES

__all__ = ["cancel", "checkpoints", "list_jobs", "nodes", "savepoint", "status", "submit"]


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
    mode: ModeOption = None,
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
) -> None:
    """Submit a job to a running cluster; prints the job id on the last line."""
    address = coordinator_address(coordinator)
    submission = prepare_job(
        job_file,
        job,
        parallelism,
        checkpoint_interval=checkpoint_interval,
        restore_from=from_savepoint,
        trace_sample=trace_sample,
        mode=mode,
    )
    reply = run_client(address, lambda c: c.submit_job(submission), client_keys(keys))
    if reply.waiting:
        err(f"job {reply.job_id} waits for slots: {reply.waiting}")
    typer.echo(reply.job_id)


def list_jobs(
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """One line per job: id, name, state, uptime."""
    from mesh.client.render import format_jobs

    jobs = run_client(coordinator_address(coordinator), lambda c: c.list_jobs(), client_keys(keys))
    typer.echo(orjson.dumps(jobs).decode() if json else format_jobs(jobs))


def status(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
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

    address = coordinator_address(coordinator)

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
        run_client(address, watch_loop, client_keys(keys))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def cancel(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
    savepoint: Annotated[
        bool, typer.Option("--savepoint", help="take a savepoint first; prints its path last")
    ] = False,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where the savepoint goes")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the job to stop")] = 30.0,
) -> None:
    """Stop a job and wait until it is stopped (its slots are free again)."""
    address = coordinator_address(coordinator)
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

    typer.echo("\n".join(run_client(address, go, client_keys(keys))))


def savepoint(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where the savepoint goes")
    ] = None,
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
) -> None:
    """Take a savepoint of a running job; prints its path on the last line."""
    target = str(directory.resolve()) if directory else None
    typer.echo(
        run_client(
            coordinator_address(coordinator),
            lambda c: c.savepoint(job_id, directory=target),
            client_keys(keys),
        )
    )


def checkpoints(
    job_id: Annotated[str, typer.Argument(help="job id (a unique prefix is enough)")],
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """A job's completed (and failed) checkpoints and savepoints with size and duration."""
    from mesh.client.render import format_checkpoints

    address = coordinator_address(coordinator)

    async def go(client: Any) -> list[dict[str, Any]]:
        return list(await client.checkpoints(job_id))  # the coordinator resolves a prefix

    found = run_client(address, go, client_keys(keys))
    typer.echo(orjson.dumps(found).decode() if json else format_checkpoints(found))


def nodes(
    coordinator: CoordinatorOption = None,
    keys: KeysOption = None,
    json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Registered nodes with their slots and last heartbeat."""
    from mesh.client.render import format_nodes

    found = run_client(coordinator_address(coordinator), lambda c: c.nodes(), client_keys(keys))
    typer.echo(orjson.dumps(found).decode() if json else format_nodes(found))
