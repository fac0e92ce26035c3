"""The package's layers, enforced by reading every module's imports (an AST walk).

Rules:
1. mesh/transport, mesh/state, mesh/time and mesh/graph never import mesh.node,
   mesh.coordinator, mesh.client, mesh.cli, mesh.commands or mesh.api.
2. mesh/time never imports mesh.transport or zmq.
3. mesh.node and mesh.coordinator never import each other.
4. ``zmq`` is imported only under mesh/transport.
5. ``aiosqlite`` is imported only under mesh/state.
6. mesh/api imports no zmq, anyio or aiosqlite.
7. No import loops inside a package: for every package under mesh/, the modules it holds
   (its sub-packages' included) import each other at module level without a cycle.
8. The node's sub-packages import one way: daemon -> runtime -> connectors -> operators
   -> dataplane; nothing imports a sub-package above it.
9. Nothing in mesh outside mesh/testing imports mesh.testing (tools for tests only).

For rules 1-6, 8 and 9 every import counts: at module level, inside functions, under
``TYPE_CHECKING``, relative ones, and ``importlib.import_module("...")`` with a literal
name. Rule 7 is about what runs at import time, so it counts module-level imports only:
an import inside a function, or under ``if TYPE_CHECKING:`` (never run), makes no loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / "mesh"

UPPER_LAYERS = (
    "mesh.node",
    "mesh.coordinator",
    "mesh.client",
    "mesh.cli",
    "mesh.commands",
    "mesh.api",
)


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
    assert ("mesh/node/runtime/job.py", "mesh.api.loader") in modules
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


def test_the_web_stack_only_under_coordinator_web() -> None:
    breaches = [
        str(imp)
        for imp in all_imports()
        if (_is(imp.module, "starlette") or _is(imp.module, "uvicorn"))
        and not imp.path.startswith("mesh/coordinator/web/")
    ]
    assert breaches == []


def test_a_coordinator_without_http_never_imports_the_web_stack() -> None:
    """The web stack costs 0.15 s and 9 MB: only a coordinator serving HTTP loads it."""
    code = (
        "import sys, mesh.coordinator.daemon, mesh.commands.daemon_main; "
        "print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_api_imports_no_runtime_libraries() -> None:
    assert _violations(("api",), ("zmq", "anyio", "aiosqlite")) == []


def test_only_tests_import_mesh_testing() -> None:
    breaches = [
        str(imp)
        for imp in all_imports()
        if _is(imp.module, "mesh.testing") and not _under(imp.path, "testing")
    ]
    assert breaches == []


def test_opentelemetry_only_under_telemetry_and_its_sdk_only_in_setup() -> None:
    """Instrumented code uses mesh.telemetry (the API); only telemetry/setup.py installs
    the SDK and the exporter, in a daemon that exports."""
    anywhere = [
        str(imp)
        for imp in all_imports()
        if _is(imp.module, "opentelemetry") and not _under(imp.path, "telemetry")
    ]
    sdk = [
        str(imp)
        for imp in all_imports()
        if (_is(imp.module, "opentelemetry.sdk") or _is(imp.module, "opentelemetry.exporter"))
        and imp.path != "mesh/telemetry/setup.py"
    ]
    assert anywhere == [] and sdk == []


def test_protocol_is_the_bottom_vocabulary() -> None:
    """mesh/protocol imports nothing of mesh but the errors (both daemons, the client,
    the transport and the state's metadata build on it)."""
    breaches = [
        str(imp)
        for imp in all_imports()
        if _under(imp.path, "protocol")
        and _is(imp.module, "mesh")
        and not (_is(imp.module, "mesh.protocol") or _is(imp.module, "mesh.errors"))
    ]
    assert breaches == []


def test_coordinator_collaborators_never_import_the_daemon() -> None:
    """The daemon composes the coordinator's collaborators; none reaches back into it."""
    breaches = [
        str(imp)
        for imp in all_imports()
        if _under(imp.path, "coordinator")
        and imp.path != "mesh/coordinator/daemon.py"
        and _is(imp.module, "mesh.coordinator.daemon")
    ]
    assert breaches == []


def test_node_sub_packages_import_one_way() -> None:
    breaches = []
    for imp in all_imports():
        if not _under(imp.path, "node") or not _is(imp.module, "mesh.node"):
            continue
        source = _node_layer(_module_name(ROOT / imp.path))
        target = _node_layer(imp.module)
        if NODE_LAYERS.index(target) < NODE_LAYERS.index(source):
            breaches.append(f"{imp} ({source} must not import {target})")
    assert sorted(breaches) == []


#: mesh/node from the top down; each may import the ones after it, never those before.
NODE_LAYERS = ("daemon", "runtime", "connectors", "operators", "dataplane")


def _node_layer(module: str) -> str:
    """The layer of a module under mesh.node (the package itself, the daemon and its
    metrics instruments are the top)."""
    parts = module.split(".")
    if len(parts) == 2 or parts[2] in ("daemon", "instruments"):
        return "daemon"
    assert parts[2] in NODE_LAYERS, f"{module} is in no node layer; add it to NODE_LAYERS"
    return parts[2]


# -- no import loops inside a package ---------------------------------------------------------


def _module_level_imports(
    source: str, module: str, *, is_package: bool, modules: frozenset[str] = frozenset()
) -> list[str]:
    """The modules ``source`` imports when it is imported: statements at module level,
    also in ``if``/``try`` blocks there, except under ``if TYPE_CHECKING:`` (never run).

    ``from pkg import name`` imports the module ``pkg.name`` when that is one of
    ``modules``, else ``pkg`` itself (its ``__init__``). A module's parent packages are
    not counted: Python initialises them first, whoever imports what.
    """
    found: list[str] = []

    def walk(body: list[ast.stmt]) -> Iterator[ast.stmt]:
        for stmt in body:
            if isinstance(stmt, ast.If):
                test = stmt.test
                name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
                if name != "TYPE_CHECKING":
                    yield from walk(stmt.body)
                yield from walk(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                for block in (stmt.body, stmt.orelse, stmt.finalbody):
                    yield from walk(block)
                for handler in stmt.handlers:
                    yield from walk(handler.body)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                yield stmt

    for stmt in walk(ast.parse(source).body):
        names = [name for _, name in imports_of(ast.unparse(stmt), module, is_package=is_package)]
        if isinstance(stmt, ast.ImportFrom):
            base, *members = names
            found.extend(name if name in modules else base for name in members)
        else:
            found.extend(names)
    return found


@cache
def _module_graph() -> dict[str, set[str]]:
    """Every module under mesh/ -> the modules under mesh/ it imports at module level."""
    paths = {
        _module_name(path): path for path in sorted(MESH.rglob("*.py")) if ".venv" not in path.parts
    }
    modules = frozenset(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets = set()
        names = _module_level_imports(
            path.read_text(encoding="utf-8"),
            module,
            is_package=path.name == "__init__.py",
            modules=modules,
        )
        for name in names:
            # ``import mesh.x.y`` names a module; anything else outside mesh is ignored.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _packages() -> list[str]:
    return sorted(_module_name(path.parent / "__init__.py") for path in MESH.rglob("__init__.py"))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    source = """
import mesh.x
from mesh import sub, name
if TYPE_CHECKING:
    import mesh.y
def later():
    import mesh.z
"""
    found = _module_level_imports(
        source, "mesh.w", is_package=False, modules=frozenset({"mesh", "mesh.sub"})
    )
    assert found == ["mesh.x", "mesh.sub", "mesh"]


@pytest.mark.parametrize("package", _packages())
def test_no_import_loops_inside_a_package(package: str) -> None:
    graph = _module_graph()
    inside = {m for m in graph if _is(m, package)}
    cycle = _cycle({m: {t for t in graph[m] if t in inside} for m in inside})
    assert cycle is None, " -> ".join(cycle or [])


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
        "opentelemetry",
        "starlette",
        "uvicorn",
    ],
)
def test_import_mesh_loads_no_runtime_library(module: str) -> None:
    assert not _loaded_by_import_mesh(module)
