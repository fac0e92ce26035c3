"""The daemons' own command-line reader (``mesh.commands.daemon_main``): what it takes,
what it leaves to typer, and that it stays in step with the typer commands."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from mesh.commands import daemons
from mesh.commands.daemon_main import parse_daemon_argv, run_coordinator, run_node


def test_reads_flags_in_both_forms_and_booleans_bare() -> None:
    flags = parse_daemon_argv(
        run_node,
        ["--coordinator", "tcp://127.0.0.1:5550", "--slots=3", "--insecure", "--node-id", "n1"],
    )
    assert flags == {
        "coordinator": "tcp://127.0.0.1:5550",
        "slots": 3,
        "insecure": True,
        "node_id": "n1",
    }
    assert parse_daemon_argv(run_coordinator, []) == {}
    # a number that is not one stays text, for its setting to refuse by name
    assert parse_daemon_argv(run_node, ["--slots", "x"]) == {"slots": "x"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--bogus", "1"],
        ["--slots"],  # no value
        ["--slots", "--insecure"],  # a flag where a value goes
        ["--slots", "1", "--slots", "2"],  # twice
        ["--insecure=yes"],  # a boolean takes no value
        ["--node_id", "n1"],  # only the dashed spelling, as typer has it
        ["stray"],
        ["--"],
        ["--bind", "tcp://127.0.0.1:1"],  # a coordinator's flag
    ],
)
def test_leaves_anything_else_to_typer(argv: list[str]) -> None:
    assert parse_daemon_argv(run_node, argv) is None


@pytest.mark.parametrize(
    ("command", "body"), [(daemons.coordinator, run_coordinator), (daemons.node, run_node)]
)
def test_typer_commands_take_the_same_flags(command: object, body: object) -> None:
    typed = inspect.signature(command)  # type: ignore[arg-type]
    plain = inspect.signature(body)  # type: ignore[arg-type]
    assert list(typed.parameters) == list(plain.parameters)
    for name, param in typed.parameters.items():
        assert param.default == plain.parameters[name].default, name


def test_a_daemon_starts_without_typer() -> None:
    code = (
        "import sys\n"
        "from mesh import cli\n"
        "sys.argv = ['mesh', 'node', '--slots', '0']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'typer' in sys.modules, 'pydantic' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["2", "False", "False"]
    assert "slots = 0 (from --slots) is not allowed" in done.stderr
