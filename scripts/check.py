"""The project's checks, as CI runs them: lint, format, types, tests.

    .venv/bin/python scripts/check.py            # everything
    .venv/bin/python scripts/check.py -- -k cli  # extra arguments go to pytest

Exits non-zero if any check fails (pytest's "no tests collected", exit 5, included).
"""

from __future__ import annotations

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
    extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    failed = []
    for name, args in [*CHECKS, ("pytest", ["-m", "pytest", *extra])]:
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
