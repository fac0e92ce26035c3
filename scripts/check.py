"""The project's checks: lint, format, types, tests.

    .venv/bin/python scripts/check.py            # everything but tests marked slow
    .venv/bin/python scripts/check.py --all      # everything, as CI runs it
    CI=true .venv/bin/python scripts/check.py    # the same (.ci/run sets CI=true)
    .venv/bin/python scripts/check.py -- -k cli  # extra arguments go to pytest

Locally, tests marked ``@pytest.mark.slow`` (chaos runs, kill -9 and failover scenarios,
large state, the README walk-through) are deselected to keep the run short; CI
(``CI=true``) and ``--all`` run every test. Extra pytest arguments come after the
default selection, so ``-- -m slow`` runs only the slow tests.

Exits non-zero if any check fails (pytest's "no tests collected", exit 5, included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

CHECKS = [
    ("ruff lint", ["-m", "ruff", "check", "mesh", "tests", "bench", "examples", "scripts"]),
    (
        "ruff format",
        ["-m", "ruff", "format", "--check", "mesh", "tests", "bench", "examples", "scripts"],
    ),
    ("mypy (strict, mesh/)", ["-m", "mypy"]),
]


def main() -> int:
    ours = sys.argv[1 : sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    unknown = [a for a in ours if a != "--all"]
    if unknown:
        print(f"unknown arguments {unknown}; pytest's go after --", file=sys.stderr)
        return 2
    everything = "--all" in ours or os.environ.get("CI", "").lower() == "true"
    selection = [] if everything else ["-m", "not slow"]
    tests = "pytest (all tests)" if everything else "pytest (not slow; --all or CI=true for all)"
    failed = []
    for name, args in [*CHECKS, (tests, ["-m", "pytest", *selection, *extra])]:
        started = time.monotonic()
        print(f"==> {name}", flush=True)
        code = subprocess.call([sys.executable, *args])
        print(f"<== {name}: exit {code} in {time.monotonic() - started:.1f}s", flush=True)
        if code != 0:
            failed.append(f"{name} (exit {code})")
    if failed:
        print("FAILED: " + ", ".join(failed), flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
