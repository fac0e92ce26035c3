"""``mesh run`` as a person sees it: on a terminal one progress line refreshed in place,
ending with the completed line and its average rate; on a pipe a few plain lines and no
escape codes; a failed run says where its logs and state directory are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.terminal import Screen, run_on_terminal

# 3,000 records at 1,000/s: about 3 s of progress to refresh.
NUMBERS = """
from mesh import Job, sinks, sources

job = Job("numbers", parallelism=2)
(
    job.source(sources.Generator(lambda i: {"i": i}, count=3000, rate=1000))
    .rebalance()
    .map(lambda r: r)
    .sink(sinks.JsonLines("out/numbers"))
)
"""

FAILS = """
from mesh import Job, sinks, sources

job = Job("boom")
job.source(sources.Collection([1, 0])).map(lambda x: 1 / x).sink(sinks.Collect())
"""

COLUMNS = 250  # wide enough that no line wraps (temporary paths are long)
PROGRESS = re.compile(r"^(\S+ )?\[(SCHEDULING|RUNNING|FINISHED) *\]")
FINAL = re.compile(
    r"^\[FINISHED  \] +\S+  in 3,000 \(avg ([\d,]+)/s\)  out 3,000 \(avg ([\d,]+)/s\)"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["TMPDIR"] = str(tmp_path)  # the run's temporary state directory lands here
    return env


@pytest.mark.slow
def test_on_a_terminal_one_line_is_refreshed_in_place(tmp_path: Path) -> None:
    (tmp_path / "counting.py").write_text(NUMBERS)
    code, output = run_on_terminal(
        [sys.executable, "-m", "mesh", "run", "counting.py"],
        cwd=str(tmp_path),
        env=_env(tmp_path),
        timeout_s=90,
        columns=COLUMNS,
    )
    assert code == 0, output
    screen = Screen(width=COLUMNS)
    screen.feed(output)
    lines = screen.lines
    # It did refresh while running (several RUNNING lines were drawn) ...
    assert len(re.findall(r"\[RUNNING   \]", output)) >= 2, output
    # ... in place: what stays on the screen is one progress line, the completed one.
    shown = [line for line in lines if PROGRESS.match(line)]
    assert len(shown) == 1, "\n".join(lines)
    final = FINAL.match(shown[0])
    assert final, shown[0]
    assert int(final.group(1).replace(",", "")) > 0 and int(final.group(2).replace(",", "")) > 0
    assert "100%" in shown[0]
    # The summary keeps its form (other tests and scripts read it) and ends the output.
    assert re.search(r"numbers\) FINISHED after \S+: 3,000 records in, 3,000 out", output)
    assert lines[-1].startswith("results: ") and "part file(s)" in lines[-1]


@pytest.mark.slow
def test_on_a_pipe_a_few_plain_lines_without_escape_codes(tmp_path: Path) -> None:
    (tmp_path / "counting.py").write_text(NUMBERS)
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "run", "counting.py"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if PROGRESS.match(line)]
    # the first status, each change of state and the end; at most one more every 5 s
    assert 2 <= len(progress) <= 6, progress
    assert progress[-1].startswith("[FINISHED")
    final = FINAL.match(progress[-1])
    assert final and int(final.group(1).replace(",", "")) > 0, progress[-1]
    assert any(line.startswith("[RUNNING") for line in progress), progress


@pytest.mark.parametrize("quiet", [False, True], ids=["", "quiet"])
def test_a_failed_run_names_its_logs_and_state_directory(tmp_path: Path, quiet: bool) -> None:
    (tmp_path / "fail.py").write_text(FAILS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "run",
            "fail.py",
            "--nodes",
            "1",
            *(["-q"] if quiet else []),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 1, result.stderr
    assert "ZeroDivisionError" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        r"daemon logs: (\S+)/ — the state directory (\S+) is kept for inspection "
        r"\(a temporary one: delete it when done\)",
        last,
    )
    assert found, last
    logs, state = Path(found.group(1)), Path(found.group(2))
    assert state.is_dir() and state.parent == tmp_path and state.name.startswith("mesh-run-")
    assert logs == state / "logs" and sorted(p.name for p in logs.glob("*.log")) == [
        "coordinator.log",
        "node-1.log",
    ]
