"""The README's first command works from a fresh clone, exactly as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "the README must open with a sh code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.index("```sh")
    assert text[:first_block].strip() == "# mesh"  # nothing before the commands
    commands = readme_commands()
    assert len(commands) == 2
    assert "mesh run examples/wordcount.py" in commands[0]
    assert "scripts/check.py" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs the README's test command


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_first_command_from_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "MESH_"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    result = subprocess.run(
        ["bash", "-c", readme_commands()[0]],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED" in result.stderr
    assert "results:" in result.stderr and "out/wordcount" in result.stderr
    parts = sorted((clone / "out" / "wordcount").glob("part-*.jsonl"))
    assert len(parts) == 2
    counts = [orjson.loads(line) for p in parts for line in p.read_bytes().splitlines()]
    assert counts and all(set(r) == {"key", "count"} for r in counts)


def readme_python_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if marker in block:
            return str(block)
    raise AssertionError(f"no python block with {marker!r} in the README")


def test_the_readme_state_example_runs(tmp_path: Path) -> None:
    """The keyed-state example, exactly as the README shows it, on an embedded cluster."""
    (tmp_path / "events").mkdir()
    ids = [i % 7 for i in range(40)]
    for n in range(2):
        lines = [orjson.dumps({"id": i, "n": j}) for j, i in enumerate(ids) if j % 2 == n]
        (tmp_path / "events" / f"e{n}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "dedupe.py").write_text(readme_python_block("class Dedupe"))
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "run", "dedupe.py", "--nodes", "2", "--quiet"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    parts = sorted((tmp_path / "out" / "dedupe").glob("part-*.jsonl"))
    records = [orjson.loads(line) for p in parts for line in p.read_bytes().splitlines()]
    assert sorted(r["id"] for r in records) == list(range(7))  # each id exactly once
