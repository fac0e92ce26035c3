"""``mesh config show``: a daemon's effective settings, each with where it came from
(its default, the config file, a ``MESH_*`` variable), as the daemon would resolve
them here: defaults < file < environment < flags."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mesh.commands.common import EXIT_USAGE, ConfigOption, fail
from mesh.errors import ConfigError

if TYPE_CHECKING:
    from mesh.config import Resolved, Setting

__all__ = ["app", "setting_rows", "show"]

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Daemon settings: what they are and where each comes from.",
)


class Role(StrEnum):
    """Which daemon's settings."""

    coordinator = "coordinator"
    node = "node"


def _duration_text(ms: int) -> str:
    """Milliseconds as the shortest exact duration a config file accepts."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def setting_rows(
    specs: tuple[Setting, ...], resolved: dict[str, Resolved], role: str
) -> list[dict[str, Any]]:
    """One row per setting: key, value (JSON-ready; the effective one where the daemon
    fills in a default: its state directories), text (the value as a file would spell
    it), source (default, file, env or flag), where (the path, variable or flag; empty
    for a default) and env (the variable that sets it)."""
    from mesh.config import default_state_dir, is_duration

    rows = []
    state_dir = resolved["state_dir"].value or default_state_dir(role)
    for spec in specs:
        found = resolved[spec.key]
        value = found.value
        if spec.key == "state_dir":
            value = state_dir
        elif spec.key == "checkpoint_dir" and value is None:
            value = state_dir / "checkpoints"
        if isinstance(value, Path):
            value = str(value)
        if value is None:
            text = "(none)"
        elif is_duration(spec):
            text = _duration_text(value)
        else:
            text = str(value)
        rows.append(
            {
                "key": spec.key,
                "value": value,
                "text": text,
                "source": found.source,
                "where": found.where,
                "env": spec.env,
            }
        )
    return rows


def show(
    role: Annotated[
        Role, typer.Argument(metavar="coordinator|node", help="the daemon", show_default=False)
    ],
    config: ConfigOption = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="one JSON object: each setting's key, value (durations in ms), text, "
            "source, where and env",
        ),
    ] = False,
) -> None:
    """Print a daemon's effective settings and where each came from (default, file,
    env); a bad setting fails as the daemon would."""
    from mesh.config import COORDINATOR_SETTINGS, NODE_SETTINGS, resolve_with_origins

    specs = COORDINATOR_SETTINGS if role is Role.coordinator else NODE_SETTINGS
    try:
        resolved = resolve_with_origins(specs, role.value, flags={}, config_file=config)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    rows = setting_rows(specs, resolved, role.value)
    if json_output:
        document = {
            "role": role.value,
            "config": str(config) if config is not None else None,
            "settings": rows,
        }
        typer.echo(json.dumps(document, indent=2))
        return
    key_width = max(len(row["key"]) for row in rows)
    value_width = max(len(row["text"]) for row in rows)
    for row in rows:
        origin = f"{row['source']} {row['where']}".rstrip()
        typer.echo(f"{row['key']:<{key_width}}  {row['text']:<{value_width}}  {origin}")


app.command("show")(show)
