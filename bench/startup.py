"""Start-up: how long the ``mesh`` command takes before it does anything useful; prints
JSON.

    python bench/startup.py               # 5 rounds
    python bench/startup.py --rounds 9

Whole commands, as a user types them (wall time of the subprocess, median over
rounds; every round runs each command once, in turn, so a machine's drift hits all
alike): ``python -c pass`` (the interpreter alone: the yardstick, and the ratio every
other figure is also given as), ``mesh --version``, ``mesh --help``, and ``mesh run`` of
a 10-event job on 1 and on 2 nodes (``--quiet``; its output checked).

Then ``mesh run``'s phases, timed inside one process the way the command runs them
(median over rounds; each round in a fresh interpreter, so imports are cold):
``imports`` (what ``mesh run`` imports before reading the job, while the daemon
launcher it forked first imports the daemons), ``prepare`` (import the job file, build
and check its graph), ``cluster_start`` (coordinator and nodes forked until each reports
ready), ``job`` (submit until the job's last result is printed),
``cluster_stop``.

And the memory of an idle cluster's daemons (1 node, no job): RSS and PSS (the
proportional share: pages shared with other processes counted in part) of each, once
ready; ``started`` as ``mesh coordinator`` and ``mesh node`` commands (as systemd and
the test clusters start them), ``forked`` by ``mesh run``'s launcher (which shares the
pages it had imported with them).

mesh's bytecode is compiled first, as ``pip install`` does: without it (an editable
checkout under ``PYTHONDONTWRITEBYTECODE=1``) every process compiles mesh from source,
about 0.15 s of CPU each.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
MESH = [sys.executable, "-m", "mesh"]

JOB = """
from mesh import Job, sinks, sources

job = Job("ten", parallelism=1)
job.source(sources.Collection(range(10))).map(lambda n: n * 2).sink(sinks.Print())
"""
EXPECTED = [str(n * 2) for n in range(10)]

PHASES = """
import sys, time, json
t0 = time.perf_counter()
from mesh.client.launcher import early_launcher, start_early_launcher
start_early_launcher()  # as mesh run does: it imports the daemons meanwhile
import anyio
from mesh.client.drive import drive_job
from mesh.client.local_cluster import LocalCluster
from mesh.commands.common import prepare_job
from pathlib import Path
t1 = time.perf_counter()
submission = prepare_job(Path(sys.argv[1]), None, None)
t2 = time.perf_counter()
cluster = LocalCluster(nodes=int(sys.argv[2]), slots=1, state_dir=Path(sys.argv[3]),
                       launcher=early_launcher())
cluster.start()
t3 = time.perf_counter()
anyio.run(lambda: drive_job(cluster.address, submission, quiet=True, state_dir=sys.argv[3]))
t4 = time.perf_counter()
cluster.stop()
t5 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "prepare": t2 - t1, "cluster_start": t3 - t2,
                  "job": t4 - t3, "cluster_stop": t5 - t4}), file=sys.stderr)
"""


def _timed(argv: list[str], cwd: Path, check: list[str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    if check is not None:
        got = sorted(done.stdout.split(), key=int)
        if got != check:
            raise SystemExit(f"{' '.join(argv)} printed {got}, expected {check}")
    return seconds


IDLE = """
import sys, time, json
from pathlib import Path
from mesh.client.launcher import early_launcher, start_early_launcher
if sys.argv[2] == "forked":
    start_early_launcher()
from mesh.client.local_cluster import LocalCluster

def memory(pid):
    status = Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().split("Pss:")[1].split()[0]
    return {"rss_mb": round(int(status) / 1024, 1), "pss_mb": round(int(rollup) / 1024, 1)}

with LocalCluster(
    nodes=1, slots=1, state_dir=Path(sys.argv[1]), launcher=early_launcher()
) as cluster:
    time.sleep(2)  # past start-up's transients: a few heartbeats
    print(json.dumps({d.name: memory(d.pid) for d in [cluster.coordinator, *cluster.nodes]}),
          file=sys.stderr)
"""


def _measured(what: str, code: str, args: list[str], work: Path) -> dict[str, Any]:
    """What the script ``code`` measured: the JSON of its last stderr line."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr}")
    measured: dict[str, Any] = orjson.loads(done.stderr.strip().splitlines()[-1])
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "mesh", quiet=1)

    with tempfile.TemporaryDirectory(prefix="mesh-bench-startup-") as tmp:
        work = Path(tmp)
        job_file = work / "ten.py"
        job_file.write_text(textwrap.dedent(JOB))
        commands: dict[str, tuple[list[str], list[str] | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "mesh --version": ([*MESH, "--version"], None),
            "mesh --help": ([*MESH, "--help"], None),
            "mesh run, 1 node": ([*MESH, "run", str(job_file), "--quiet"], EXPECTED),
            "mesh run, 2 nodes": (
                [*MESH, "run", str(job_file), "--quiet", "--nodes", "2"],
                EXPECTED,
            ),
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        phases: dict[str, dict[str, list[float]]] = {"1 node": {}, "2 nodes": {}}
        for _ in range(args.rounds):
            for name, (argv, check) in commands.items():
                walls[name].append(_timed(argv, work, check))
            for label, nodes in (("1 node", 1), ("2 nodes", 2)):
                state = work / f"phases-{nodes}"
                measured = _measured(
                    "phases", PHASES, [str(job_file), str(nodes), str(state)], work
                )
                for phase, seconds in measured.items():
                    phases[label].setdefault(phase, []).append(seconds)
        idle = {
            how: [
                _measured("idle cluster", IDLE, [str(work / f"idle-{how}"), how], work)
                for _ in range(args.rounds)
            ]
            for how in ("started", "forked")
        }

    base = statistics.median(walls["python -c pass"])
    result: dict[str, Any] = {
        "benchmark": "startup",
        "rounds": args.rounds,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1m": os.getloadavg()[0],
        "wall_s": {name: round(statistics.median(v), 3) for name, v in walls.items()},
        "ratio_to_python": {
            name: round(statistics.median(v) / base, 1) for name, v in walls.items()
        },
        "mesh_run_phases_s": {
            label: {phase: round(statistics.median(v), 3) for phase, v in measured_phases.items()}
            for label, measured_phases in phases.items()
        },
        "idle_memory_mb_median": {
            how: {
                daemon: {
                    kind: statistics.median(run[daemon][kind] for run in runs)
                    for kind in ("rss_mb", "pss_mb")
                }
                for daemon in runs[0]
            }
            for how, runs in idle.items()
        },
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
