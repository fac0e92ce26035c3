"""``mesh keys generate DIR``: CURVE key pairs for the coordinator, nodes and clients."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mesh.commands.common import EXIT_USAGE, fail
from mesh.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="CURVE keys: authenticated, encrypted sockets between daemons and clients.",
)


@app.command()
def generate(
    directory: Annotated[Path, typer.Argument(help="the keys directory (created if missing)")],
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="also make a pair called NAME (repeatable); a node whose --node-id is "
            "NAME uses it instead of the shared node pair",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace existing keys")] = False,
) -> None:
    """Make key pairs for coordinator, node and client (and each --name) in DIR.

    DIR/NAME.key is a public key, DIR/NAME.key_secret the pair (mode 0600), and DIR/public/
    the allow-list: the public keys a daemon lets connect. DIR/http.token (mode 0600) is
    what the coordinator's dashboard and REST API require. Give each host what its role
    needs (see the README's Keys section); existing keys are kept unless --force (a
    missing http.token is written next to existing keys).
    """
    from mesh.transport.keys import DEFAULT_NAMES, generate_keys, write_http_token

    token = None
    try:
        token = write_http_token(directory, force=force)
        written = generate_keys(directory, [*DEFAULT_NAMES, *(name or [])], force=force)
    except (ConfigError, ValueError) as exc:
        if token is not None and "exist already" in str(exc):
            typer.echo(f"keys exist already, kept; wrote {token} (secret, mode 0600)")
            return
        raise fail(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise fail(f"cannot write keys in {directory}: {exc}", EXIT_USAGE) from None
    secrets = sorted(p.name for p in written if p.name.endswith(".key_secret"))
    typer.echo(f"wrote {', '.join(secrets)} (secret, mode 0600) and their public keys")
    typer.echo(f"allow-list: {directory / 'public'}/ ({len(secrets)} key(s))")
    if token is not None:
        typer.echo(f"HTTP token: {token} (secret, mode 0600; the dashboard asks for it)")
