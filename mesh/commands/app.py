"""The ``mesh`` typer app: the subcommands of ``mesh.commands`` assembled in the order
``mesh --help`` lists them (``mesh.cli`` runs it)."""

from __future__ import annotations

from typing import Annotated

import typer

from mesh._version import __version__
from mesh.commands import config, daemons, jobs, keys, plan, run

__all__ = ["app"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="mesh: a distributed stream processor for Python.",
)

# In the order ``mesh --help`` lists them.
app.command()(daemons.coordinator)
app.command()(daemons.node)
app.command()(plan.plan)
app.command()(jobs.submit)
app.command("list")(jobs.list_jobs)
app.command()(jobs.status)
app.command()(jobs.cancel)
app.command()(jobs.savepoint)
app.command()(jobs.checkpoints)
app.command()(jobs.nodes)
app.command()(run.run)
app.add_typer(config.app, name="config")
app.add_typer(keys.app, name="keys")


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
