"""``mesh plan``: a job's graphs, without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mesh.commands.common import (
    EXIT_USAGE,
    fail,
)
from mesh.errors import (
    GraphError,
    JobCodeError,
)

__all__ = ["plan"]


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
        raise fail(f"--format must be one of {', '.join(PLAN_FORMATS)}, got {fmt!r}", EXIT_USAGE)
    if parallelism is not None and parallelism < 1:
        raise fail(f"--parallelism must be >= 1, got {parallelism}", EXIT_USAGE)
    try:
        graph = build_graph(job_file, job_name=job, parallelism=parallelism)
    except (JobCodeError, GraphError) as exc:
        raise fail(job_file_error_line(job_file, exc), EXIT_USAGE) from None
    typer.echo(format_plan(graph, fmt), nl=False)
