"""Daemon settings (mesh/config.py) and durations (mesh/time/durations.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh import ConfigError
from mesh.config import COORDINATOR_SETTINGS, NODE_SETTINGS, default_state_dir, resolve_settings
from mesh.time.durations import format_duration, parse_duration


def _node(
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> dict[str, Any]:
    return resolve_settings(
        NODE_SETTINGS, "node", flags=flags or {}, env=env or {}, config_file=config_file
    )


def _coordinator(
    flags: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> dict[str, Any]:
    return resolve_settings(
        COORDINATOR_SETTINGS,
        "coordinator",
        flags=flags or {},
        env=env or {},
        config_file=config_file,
    )


def _toml(tmp_path: Path, text: str, name: str = "mesh.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- precedence -------------------------------------------------------------------------------


def test_defaults_when_nothing_is_set() -> None:
    assert _node() == {
        "coordinator": "tcp://127.0.0.1:5550",
        "slots": 1,
        "state_dir": None,
        "bind_host": "127.0.0.1",
        "advertise_host": None,
        "node_id": None,
        "max_frame_size": 64 << 20,
        "max_bad_messages": 100,
        "keys": None,
        "insecure": False,
        "otlp_endpoint": None,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "log_level": "info",
        "log_format": "text",
    }
    assert _coordinator() == {
        "bind": "tcp://127.0.0.1:5550",
        "state_dir": None,
        "heartbeat_interval": 1000,
        "heartbeat_timeout": 5000,
        "placement": "spread",
        "slot_timeout": 300_000,
        "checkpoint_dir": None,
        "checkpoint_timeout": 600_000,
        "checkpoint_min_pause": 0,
        "tolerable_checkpoint_failures": 3,
        "retained_checkpoints": 3,
        "max_message_size": 64 << 20,
        "max_bad_messages": 100,
        "keys": None,
        "insecure": False,
        "otlp_endpoint": None,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "http": None,
        "http_tls_cert": None,
        "http_tls_key": None,
        "jaeger_url": None,
        "log_level": "info",
        "log_format": "text",
    }


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    path = _toml(tmp_path, "slots = 2\nlog_level = 'warning'\nnode_id = 'from-file'\n")
    env = {"MESH_SLOTS": "3", "MESH_LOG_LEVEL": "error"}
    values = _node(flags={"slots": 4}, env=env, config_file=path)
    assert values["slots"] == 4  # flag
    assert values["log_level"] == "error"  # env
    assert values["node_id"] == "from-file"  # file
    assert values["bind_host"] == "127.0.0.1"  # default
    assert _node(env=env, config_file=path)["slots"] == 3
    assert _node(config_file=path)["slots"] == 2


def test_a_flag_of_none_means_not_given() -> None:
    assert _node(flags={"slots": None}, env={"MESH_SLOTS": "6"})["slots"] == 6


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_SLOTS", "5")
    values = resolve_settings(NODE_SETTINGS, "node", flags={})
    assert values["slots"] == 5


def test_env_variable_names() -> None:
    assert [s.env for s in NODE_SETTINGS] == [
        "MESH_COORDINATOR",
        "MESH_SLOTS",
        "MESH_STATE_DIR",
        "MESH_BIND_HOST",
        "MESH_ADVERTISE_HOST",
        "MESH_NODE_ID",
        "MESH_MAX_FRAME_SIZE",
        "MESH_MAX_BAD_MESSAGES",
        "MESH_KEYS",
        "MESH_INSECURE",
        "MESH_OTLP_ENDPOINT",
        "MESH_METRICS_PORT",
        "MESH_METRICS_HOST",
        "MESH_LOG_LEVEL",
        "MESH_LOG_FORMAT",
    ]


# -- files ------------------------------------------------------------------------------------


def test_a_table_named_after_the_daemon(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
        log_level = "debug"

        [node]
        log_level = "warning"
        slots = 8
        state_dir = "/var/lib/mesh-node"

        [coordinator]
        placement = "pack"
        state_dir = "/var/lib/mesh-coordinator"
        """,
    )
    node = _node(config_file=path)
    # The daemon's own table is more specific than the top level.
    assert node["slots"] == 8
    assert node["log_level"] == "warning"
    assert node["state_dir"] == Path("/var/lib/mesh-node")
    coordinator = _coordinator(config_file=path)
    assert coordinator["placement"] == "pack"
    assert coordinator["state_dir"] == Path("/var/lib/mesh-coordinator")
    assert coordinator["log_level"] == "debug"


def test_unknown_key_in_a_file_names_the_key_and_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "slot = 3\n")
    with pytest.raises(ConfigError) as info:
        _node(config_file=path)
    message = str(info.value)
    assert "unknown key 'slot'" in message
    assert str(path) in message
    assert "slots" in message  # what is allowed


def test_a_shared_file_holds_top_level_keys_for_both_daemons(tmp_path: Path) -> None:
    path = _toml(tmp_path, "slots = 2\nplacement = 'pack'\n")
    assert _node(config_file=path)["slots"] == 2
    assert _coordinator(config_file=path)["placement"] == "pack"  # node's "slots" ignored
    wrong_table = _toml(tmp_path, "[coordinator]\nslots = 2\n")
    with pytest.raises(ConfigError, match="unknown key 'slots' for a coordinator"):
        _coordinator(config_file=wrong_table)


def test_unknown_key_in_the_daemon_table(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[node]\nheartbeat_interval = '1s'\n")
    with pytest.raises(ConfigError, match="unknown key 'heartbeat_interval' for a node"):
        _node(config_file=path)


def test_a_misspelt_table_is_an_unknown_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[nodes]\nslots = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'nodes'"):
        _node(config_file=path)


def test_bad_toml(tmp_path: Path) -> None:
    path = _toml(tmp_path, "slots = = 3\n")
    with pytest.raises(ConfigError) as info:
        _node(config_file=path)
    assert f"config file {path} is not valid TOML" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"config file {path} does not exist"):
        _node(config_file=path)


def test_unreadable_config_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        _node(config_file=tmp_path)  # a directory


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key", "value", "origin", "allowed"),
    [
        ({"flags": {"slots": 0}}, "slots", "0", "--slots", "expected an integer >= 1"),
        ({"env": {"MESH_SLOTS": "many"}}, "slots", "'many'", "MESH_SLOTS", "integer >= 1"),
        ({"env": {"MESH_SLOTS": "2.5"}}, "slots", "'2.5'", "MESH_SLOTS", "integer >= 1"),
        ({"flags": {"slots": True}}, "slots", "True", "--slots", "integer >= 1"),
        (
            {"flags": {"log_level": "loud"}},
            "log_level",
            "'loud'",
            "--log-level",
            "expected one of debug, info, warning, error",
        ),
        (
            {"env": {"MESH_COORDINATOR": "localhost:5550"}},
            "coordinator",
            "'localhost:5550'",
            "MESH_COORDINATOR",
            "expected an address like tcp://127.0.0.1:5550",
        ),
        (
            {"flags": {"coordinator": "tcp://10.0.0.1:*"}},
            "coordinator",
            "'tcp://10.0.0.1:*'",
            "--coordinator",
            "a concrete port is needed",
        ),
        (
            {"flags": {"coordinator": "tcp://10.0.0.1:70000"}},
            "coordinator",
            "'tcp://10.0.0.1:70000'",
            "--coordinator",
            "port must be 1..65535",
        ),
        ({"flags": {"bind_host": "  "}}, "bind_host", "'  '", "--bind-host", "non-empty string"),
    ],
)
def test_bad_value_is_one_line_naming_key_value_origin_and_allowed(
    kwargs: dict[str, Any], key: str, value: str, origin: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _node(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{key} = {value} (from {origin})")
    assert allowed in message


def test_bad_value_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[node]\nslots = 2.5\n")
    with pytest.raises(ConfigError) as info:
        _node(config_file=path)
    message = str(info.value)
    assert message.startswith(f"slots = 2.5 (from {path})")
    assert "integer >= 1" in message


@pytest.mark.parametrize(
    ("raw", "allowed"),
    [("0s", "above zero"), ("soon", "a duration like 500ms"), (-1, "must not be negative")],
)
def test_bad_durations(raw: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        _coordinator(flags={"heartbeat_timeout": raw})
    assert str(info.value).startswith(f"heartbeat_timeout = {raw!r} (from --heartbeat-timeout)")
    assert allowed in str(info.value)


def test_infinite_duration_in_a_file_is_a_config_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, "heartbeat_timeout = inf\n")
    with pytest.raises(ConfigError, match="heartbeat_timeout = inf"):
        _coordinator(config_file=path)


def test_values_are_parsed() -> None:
    values = _coordinator(
        flags={"heartbeat_interval": "250ms", "placement": "PACK"},
        env={
            "MESH_HEARTBEAT_TIMEOUT": "2s",
            "MESH_BIND": " tcp://0.0.0.0:* ",
            "MESH_LOG_LEVEL": "Debug",
        },
    )
    assert values["heartbeat_interval"] == 250
    assert values["heartbeat_timeout"] == 2000
    assert values["placement"] == "pack"
    assert values["bind"] == "tcp://0.0.0.0:*"
    assert values["log_level"] == "debug"
    node = _node(env={"MESH_SLOTS": "12", "MESH_STATE_DIR": "~/mesh-state"})
    assert node["slots"] == 12
    assert node["state_dir"] == Path.home() / "mesh-state"


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir("node") == tmp_path / "mesh" / "node"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir("coordinator") == (
        Path.home() / ".local" / "state" / "mesh" / "coordinator"
    )


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (250, 250),
        (2.9, 3),
        ("500ms", 500),
        ("2s", 2000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1.5s", 1500),
        (" 2 s ", 2000),
        ("0.25m", 15_000),
        ("750", 750),
        (" 42 ", 42),
    ],
)
def test_parse_duration(value: Any, ms: int) -> None:
    assert parse_duration(value) == ms


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 parsecs", "expected a duration like 500ms, 2s, 5m or 1h, got '5 parsecs'"),
        ("", "got ''"),
        ("-1s", "got '-1s'"),
        ("1.5", "got '1.5'"),
        ("s", "got 's'"),
        ("2S", "got '2S'"),
        (-1, "must not be negative, got -1"),
        (-0.5, "must not be negative"),
        (True, "got True"),
        (None, "got None"),
        ([1], "got [1]"),
    ],
)
def test_parse_duration_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value, what="checkpoint_interval")
    assert str(info.value).startswith("checkpoint_interval: ")
    assert message in str(info.value)


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_parse_duration_rejects_non_finite_floats(value: float) -> None:
    with pytest.raises(ValueError, match=r"^checkpoint_interval: "):
        parse_duration(value, what="checkpoint_interval")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (850, "850ms"),
        (999.9, "999ms"),
        (1000, "1.0s"),
        (12_300, "12.3s"),
        (60_000, "1m00s"),
        (245_000, "4m05s"),
        (3_599_999, "59m59s"),
        (3_600_000, "1h00m"),
        (7_800_000, "2h10m"),
        (90_000_000, "25h00m"),
    ],
)
def test_format_duration(ms: float, text: str) -> None:
    assert format_duration(ms) == text


def test_checkpoint_settings_from_a_file(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        "[coordinator]\ncheckpoint_min_pause = '0s'\ntolerable_checkpoint_failures = 0\n"
        "checkpoint_timeout = '1m'\n",
    )
    values = _coordinator(config_file=path)
    assert values["checkpoint_min_pause"] == 0
    assert values["tolerable_checkpoint_failures"] == 0
    assert values["checkpoint_timeout"] == 60_000
    values = _coordinator(env={"MESH_CHECKPOINT_MIN_PAUSE": "500ms"})
    assert values["checkpoint_min_pause"] == 500


@pytest.mark.parametrize("raw", [-1, "many", 1.5, True])
def test_bad_tolerable_checkpoint_failures(raw: Any) -> None:
    with pytest.raises(ConfigError) as info:
        _coordinator(flags={"tolerable_checkpoint_failures": raw})
    assert str(info.value).startswith(f"tolerable_checkpoint_failures = {raw!r}")
    assert "integer >= 0" in str(info.value)


def test_the_shipped_config_files_are_valid() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    coordinator = _coordinator(config_file=configs / "coordinator.toml")
    assert coordinator["checkpoint_timeout"] == 600_000
    assert coordinator["state_dir"] == Path("/var/lib/mesh/coordinator")
    node = _node(config_file=configs / "node.toml")
    assert node["slots"] == 2


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("65536", 65536),
        (2048, 2048),
        ("64MiB", 64 << 20),
        ("512 KiB", 512 << 10),
        ("1GiB", 1 << 30),
    ],
)
def test_message_sizes(raw: Any, size: int) -> None:
    assert _node(env={"MESH_MAX_FRAME_SIZE": str(raw)})["max_frame_size"] == size
    assert _coordinator(flags={"max_message_size": raw})["max_message_size"] == size


@pytest.mark.parametrize("raw", ["0", "1023", "64MB", "-5", "lots", True, 1.5])
def test_bad_message_sizes(raw: Any) -> None:
    with pytest.raises(ConfigError, match="expected a size in bytes of at least 1KiB"):
        _coordinator(flags={"max_message_size": raw})
