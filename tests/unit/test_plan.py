"""``mesh plan``: the plan of every example (and of a job using every option) is pinned
in golden files, in all three formats; the pictures are well-formed; a job file that
does not load fails in one line naming the file.

Regenerate the golden files after an intended change with
``MESH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_plan.py`` and review
the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli import app
from mesh.client.client import build_graph
from mesh.client.plan import PLAN_FORMATS, format_plan, plan_dot, plan_mermaid, plan_text

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "plan"
UPDATE = os.environ.get("MESH_UPDATE_GOLDEN") == "1"
JOBS = [*sorted(ROOT.glob("examples/*.py")), ROOT / "tests" / "jobs" / "plan_features.py"]
SUFFIX = {"text": "txt", "dot": "dot", "mermaid": "mmd"}


@pytest.mark.parametrize("fmt", sorted(PLAN_FORMATS))
@pytest.mark.parametrize("job_file", JOBS, ids=lambda p: p.stem)
def test_plan_matches_its_golden_file(job_file: Path, fmt: str) -> None:
    plan = format_plan(build_graph(job_file), fmt)
    golden = GOLDEN / f"{job_file.stem}.{SUFFIX[fmt]}"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(plan)
    assert golden.exists(), f"{golden} is missing: run with MESH_UPDATE_GOLDEN=1"
    assert plan == golden.read_text(), (
        f"the plan of {job_file.name} changed; if intended, regenerate with MESH_UPDATE_GOLDEN=1"
    )


def test_every_example_has_its_golden_files() -> None:
    expected = {f"{job.stem}.{suffix}" for job in JOBS for suffix in SUFFIX.values()}
    assert {p.name for p in GOLDEN.iterdir()} == expected


def test_text_plan_shows_operators_edges_and_chains() -> None:
    plan = plan_text(build_graph(ROOT / "tests" / "jobs" / "plan_features.py"))
    assert "slots: needs 5 (default 2, heavy 3)" in plan
    for partitioning in ("rebalance", "rescale", "broadcast", "hash"):
        assert f": {partitioning}" in plan
    assert 'op 1 -> op 7: forward, side output "odd"' in plan
    assert "op 3 -> op 4: forward (chained in task 3)" in plan
    assert "task 3: positive -> print" in plan
    assert "parallelism 2, slot group default, co-location pair" in plan
    row = next(line.split() for line in plan.splitlines() if line.split()[:2] == ["2", "double"])
    assert row == ["2", "double", "map", "double", "3", "heavy", "-", "disabled", "2"]


def _dot_nodes_and_edges(dot: str) -> tuple[set[str], list[tuple[str, str]]]:
    nodes = set(re.findall(r"^\s+(op_\d+) \[label=", dot, re.MULTILINE))
    edges = re.findall(r"^\s+(op_\d+) -> (op_\d+) \[", dot, re.MULTILINE)
    return nodes, edges


@pytest.mark.parametrize("job_file", JOBS, ids=lambda p: p.stem)
def test_dot_plan_is_well_formed(job_file: Path, tmp_path: Path) -> None:
    graph = build_graph(job_file)
    dot = plan_dot(graph)
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    nodes, edges = _dot_nodes_and_edges(dot)
    assert nodes == {f"op_{op.id}" for op in graph.operators}
    assert len(edges) == len(graph.edges) and {n for e in edges for n in e} <= nodes
    if shutil.which("dot") is None:
        return  # Graphviz is not installed: the structural check above is all we can do
    result = subprocess.run(
        ["dot", "-Tsvg", "-o", str(tmp_path / "plan.svg")],
        input=dot,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plan.svg").stat().st_size > 0


@pytest.mark.parametrize("job_file", JOBS, ids=lambda p: p.stem)
def test_mermaid_plan_is_well_formed(job_file: Path) -> None:
    graph = build_graph(job_file)
    lines = plan_mermaid(graph).splitlines()
    assert lines[0] == "flowchart LR"
    depth = 0
    declared = set()
    for line in lines[1:]:
        if line.strip().startswith("subgraph "):
            depth += 1
        elif line.strip() == "end":
            depth -= 1
            assert depth >= 0
        elif match := re.fullmatch(r'\s+(op_\d+)\["[^"]*"\]', line):
            declared.add(match.group(1))
        else:
            edge = re.fullmatch(r'\s+(op_\d+) (-->|==>|-\.->)\|"[^"|]*"\| (op_\d+)', line)
            assert edge, f"not a node, edge or subgraph line: {line!r}"
            assert {edge.group(1), edge.group(3)} <= declared
    assert depth == 0
    assert declared == {f"op_{op.id}" for op in graph.operators}


def test_labels_are_escaped() -> None:
    assert plan_mermaid.__module__ == "mesh.client.plan"
    from mesh.client.plan import _dot_quote, _mermaid_text

    assert _dot_quote('a "b"\\c\nd') == '"a \\"b\\"\\\\c\\nd"'
    assert _mermaid_text('x<br/>"y" <z> #1') == "x<br/>#quot;y#quot; #lt;z#gt; #35;1"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown plan format 'svg'"):
        format_plan(build_graph(ROOT / "examples" / "wordcount.py"), "svg")


runner = CliRunner()


def test_cli_prints_the_plan_in_each_format() -> None:
    for fmt, suffix in SUFFIX.items():
        result = runner.invoke(app, ["plan", str(ROOT / "examples/clicks.py"), "--format", fmt])
        assert result.exit_code == 0, result.output
        assert result.stdout == (GOLDEN / f"clicks.{suffix}").read_text()


def test_cli_parallelism_override_changes_the_plan() -> None:
    result = runner.invoke(app, ["plan", str(ROOT / "examples/wordcount.py"), "--parallelism", "3"])
    assert result.exit_code == 0, result.output
    assert "slots: needs 3 (default 3)" in result.stdout


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import no_such_module\n", ":1: ModuleNotFoundError: No module named 'no_such_module'"),
        ("x = 1\n1 / 0\n", ":2: ZeroDivisionError: division by zero"),
        ("x = (\n", ": SyntaxError: "),
        ("x = 1\n", " defines no Job at module level"),
    ],
)
def test_cli_a_job_file_that_does_not_load_fails_in_one_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    job_file = tmp_path / "broken.py"
    job_file.write_text(source)
    result = runner.invoke(app, ["plan", str(job_file)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: job file {job_file}") and expected in lines[0]


def test_cli_missing_file_and_bad_format_are_usage_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["plan", str(tmp_path / "nope.py")])
    assert missing.exit_code == 2 and "job file not found" in missing.stderr
    bad = runner.invoke(app, ["plan", str(ROOT / "examples/clicks.py"), "--format", "svg"])
    assert bad.exit_code == 2 and "--format must be one of text, dot, mermaid" in bad.stderr
