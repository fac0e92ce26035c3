"""Where each daemon setting comes from (resolve_with_origins), ``mesh config show``,
and the daemons' --help: every setting has a flag, or the help says it is set in the
file or environment only; each names its variable, default and choices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from mesh.cli import app
from mesh.commands.config import setting_rows
from mesh.config import (
    COORDINATOR_SETTINGS,
    NODE_SETTINGS,
    Resolved,
    Setting,
    default_state_dir,
    resolve_with_origins,
)

runner = CliRunner()
ROLES = {"coordinator": COORDINATOR_SETTINGS, "node": NODE_SETTINGS}


def test_each_value_says_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nslots = 3\nbind_host = "0.0.0.0"\nlog_level = "debug"\n')
    resolved = resolve_with_origins(
        NODE_SETTINGS,
        "node",
        flags={"log_level": "error", "node_id": None},
        config_file=config,
        env={"MESH_BIND_HOST": "10.0.0.5"},
    )
    assert resolved["slots"] == Resolved(3, "file", str(config))
    assert resolved["bind_host"] == Resolved("10.0.0.5", "env", "MESH_BIND_HOST")
    assert resolved["log_level"] == Resolved("error", "flag", "--log-level")
    assert resolved["node_id"] == Resolved(None, "default")
    assert resolved["coordinator"] == Resolved("tcp://127.0.0.1:5550", "default")


def test_rows_show_the_effective_directories_and_durations_as_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    resolved = resolve_with_origins(
        COORDINATOR_SETTINGS,
        "coordinator",
        flags={},
        env={"MESH_SLOT_TIMEOUT": "90s", "MESH_CHECKPOINT_MIN_PAUSE": "1500ms"},
    )
    rows = {row["key"]: row for row in setting_rows(COORDINATOR_SETTINGS, resolved, "coordinator")}
    state = str(default_state_dir("coordinator"))
    assert rows["state_dir"]["value"] == state and rows["state_dir"]["source"] == "default"
    assert rows["checkpoint_dir"]["value"] == f"{state}/checkpoints"
    assert rows["slot_timeout"] | {} == {
        "key": "slot_timeout",
        "value": 90_000,
        "text": "90s",
        "source": "env",
        "where": "MESH_SLOT_TIMEOUT",
        "env": "MESH_SLOT_TIMEOUT",
    }
    assert rows["checkpoint_min_pause"]["text"] == "1500ms"
    assert rows["heartbeat_timeout"]["text"] == "5s"
    assert rows["slot_timeout"]["text"] == "90s"
    assert rows["checkpoint_timeout"]["text"] == "10m"
    assert rows["otlp_endpoint"]["text"] == "(none)"


def test_config_show_as_text_and_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[node]\nslots = 3\n")
    monkeypatch.setenv("MESH_NODE_ID", "node-a")
    monkeypatch.delenv("MESH_SLOTS", raising=False)
    result = runner.invoke(app, ["config", "show", "node", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split(None, 2)[1:] for line in result.output.splitlines()}
    assert lines["slots"] == ["3", f"file {config}"]
    assert lines["node_id"] == ["node-a", "env MESH_NODE_ID"]
    assert lines["log_format"] == ["text", "default"]
    assert list(lines) == [s.key for s in NODE_SETTINGS]

    result = runner.invoke(app, ["config", "show", "node", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["role"] == "node" and document["config"] == str(config)
    by_key = {row["key"]: row for row in document["settings"]}
    assert by_key["slots"]["value"] == 3 and by_key["slots"]["source"] == "file"
    assert by_key["node_id"]["where"] == "MESH_NODE_ID"


def test_config_show_fails_like_the_daemon_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_SLOTS", "zero")
    result = runner.invoke(app, ["config", "show", "node"])
    assert result.exit_code == 2
    assert "slots = 'zero' (from MESH_SLOTS) is not allowed" in result.output


def _command(role: str) -> Any:
    """The daemon's command as the CLI builds it."""
    return typer.main.get_command(app).commands[role]  # type: ignore[attr-defined]


def _choices(setting: Setting) -> list[str]:
    """The values a choice setting allows (from its own error message), else []."""
    try:
        setting.parse("\0")
    except ValueError as exc:
        prefix = "expected one of "
        if str(exc).startswith(prefix):
            return str(exc).removeprefix(prefix).split(", ")
    return []


@pytest.mark.parametrize("role", list(ROLES))
def test_help_names_every_setting_with_its_variable_default_and_choices(role: str) -> None:
    command = _command(role)
    flags = {
        param.name: param.help or ""
        for param in command.params
        if param.param_type_name == "option" and param.name
    }
    description = command.help or ""
    file_only = description.partition("Set in the config file or environment only:")[2]
    for setting in ROLES[role]:
        if setting.key in flags:
            text = " ".join(flags[setting.key].split())
            assert setting.key not in file_only.split(), setting.key
        else:
            assert file_only, f"{role}: {setting.key} has no flag and no file/env-only note"
            entry = file_only.split(f"  {setting.key}  ", 1)
            assert len(entry) == 2, f"{role}: {setting.key} has no flag and no note"
            text = " ".join(entry[1].split("]", 1)[0].split()) + "]"
        assert f"env {setting.env}" in text, (setting.key, text)
        assert "default" in text, (setting.key, text)
        for choice in _choices(setting):
            assert choice in text, (setting.key, choice, text)


def test_every_choice_setting_is_found() -> None:
    found: dict[str, Any] = {s.key: _choices(s) for s in COORDINATOR_SETTINGS if _choices(s)}
    assert found == {
        "placement": ["spread", "pack"],
        "log_level": ["debug", "info", "warning", "error"],
        "log_format": ["text", "json"],
    }
