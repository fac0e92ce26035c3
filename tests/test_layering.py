"""The package's layers, enforced by reading every module's imports (an AST walk).

Rules:
1. mesh/transport, mesh/state, mesh/time and mesh/graph never import mesh.node,
   mesh.coordinator, mesh.client, mesh.cli or mesh.api.
2. mesh/time never imports mesh.transport or zmq.
3. mesh.node and mesh.coordinator never import each other.
4. ``zmq`` is imported only under mesh/transport.
5. ``aiosqlite`` is imported only under mesh/state.
6. mesh/api imports no zmq, anyio or aiosqlite.
7. Nothing in mesh outside mesh/testing imports mesh.testing (tools for tests only).

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``, relative
ones, and ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / "mesh"

UPPER_LAYERS = ("mesh.node", "mesh.coordinator", "mesh.client", "mesh.cli", "mesh.api")


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository, with forward slashes
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of everything ``source`` (the module ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from mesh import node`` imports the module mesh.node.
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (
                    isinstance(node.func, ast.Name)
                    and node.func.id in ("import_module", "__import__")
                )
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    result = []
    for path in sorted(MESH.rglob("*.py")):
        if ".venv" in path.parts:
            continue
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text(encoding="utf-8")
        module = _module_name(path)
        for line, name in imports_of(source, module, is_package=path.name == "__init__.py"):
            result.append(Import(rel, line, name))
    return tuple(result)


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _under(path: str, *folders: str) -> bool:
    return any(path.startswith(f"mesh/{folder}/") for folder in folders)


def _violations(files: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        {
            str(imp)
            for imp in all_imports()
            if _under(imp.path, *files) and any(_is(imp.module, f) for f in forbidden)
        }
    )


# -- the walker itself ------------------------------------------------------------------------


def test_the_walker_sees_imports() -> None:
    modules = {(imp.path, imp.module) for imp in all_imports()}
    assert ("mesh/node/job.py", "mesh.api.loader") in modules
    assert ("mesh/coordinator/daemon.py", "anyio") in modules
    assert ("mesh/graph/logical.py", "mesh.errors") in modules
    assert len({imp.path for imp in all_imports()}) > 30


def test_the_walker_resolves_every_import_form() -> None:
    source = """
import zmq.asyncio
from . import sibling
from .. import node
from ..coordinator.scheduler import schedule
from mesh import cli
import importlib
if TYPE_CHECKING:
    from mesh.api.job import Job
def later():
    import aiosqlite
    importlib.import_module("mesh.client.client")
"""
    names = {name for _, name in imports_of(source, "mesh.graph.thing")}
    assert {
        "zmq.asyncio",
        "mesh.graph.sibling",
        "mesh.node",
        "mesh.coordinator.scheduler",
        "mesh.cli",
        "mesh.api.job",
        "aiosqlite",
        "mesh.client.client",
    } <= names
    in_package = {name for _, name in imports_of("from . import x", "mesh.graph", is_package=True)}
    assert "mesh.graph.x" in in_package


# -- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["transport", "state", "time", "graph"])
def test_lower_layers_never_import_upper_layers(layer: str) -> None:
    assert _violations((layer,), UPPER_LAYERS) == []


def test_time_never_imports_transport_or_zmq() -> None:
    assert _violations(("time",), ("mesh.transport", "zmq")) == []


def test_node_never_imports_coordinator() -> None:
    assert _violations(("node",), ("mesh.coordinator",)) == []


def test_coordinator_never_imports_node() -> None:
    assert _violations(("coordinator",), ("mesh.node",)) == []


def test_zmq_only_under_transport() -> None:
    breaches = [
        str(imp)
        for imp in all_imports()
        if _is(imp.module, "zmq") and not _under(imp.path, "transport")
    ]
    assert breaches == []


def test_aiosqlite_only_under_state() -> None:
    breaches = [
        str(imp)
        for imp in all_imports()
        if _is(imp.module, "aiosqlite") and not _under(imp.path, "state")
    ]
    assert breaches == []


def test_api_imports_no_runtime_libraries() -> None:
    assert _violations(("api",), ("zmq", "anyio", "aiosqlite")) == []


def test_only_tests_import_mesh_testing() -> None:
    breaches = [
        str(imp)
        for imp in all_imports()
        if _is(imp.module, "mesh.testing") and not _under(imp.path, "testing")
    ]
    assert breaches == []


# -- what ``import mesh`` actually loads -------------------------------------------------------


def _loaded_by_import_mesh(module: str) -> bool:
    code = f"import sys, mesh; print({module!r} in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "True"


@pytest.mark.parametrize(
    "module",
    [
        "zmq",
        "aiosqlite",
        "anyio",
    ],
)
def test_import_mesh_loads_no_runtime_library(module: str) -> None:
    assert not _loaded_by_import_mesh(module)
