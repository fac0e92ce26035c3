"""``mesh run``'s daemon launcher (``mesh.client.launcher``): daemons forked from a
process that has imported them, each as a command line would have started it; gone
when ``mesh run`` goes, however it goes. Each scenario runs in a fresh interpreter, as
``mesh run`` does (the launcher is forked before any thread exists)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import poll_until_sync

ROOT = Path(__file__).resolve().parents[2]

LIFE = r"""
import json, os, subprocess, sys
from pathlib import Path
from mesh.client.launcher import ForkedProcess, Launcher
launcher = Launcher.start()
assert launcher is not None, "no launcher"
import anyio
from mesh.client.local_cluster import LocalCluster
from tests.helpers import run_job, write_job

JOB = '''
from mesh import Job, sinks, sources
job = Job("squares", parallelism=2)
job.source(sources.Collection(list(range(40)))).rebalance().map(lambda x: x * x).sink(
    sinks.Collect()
)
'''

def parent_of(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

state = Path(sys.argv[1])
facts = {}
cluster = LocalCluster(
    nodes=2, slots=1, state_dir=state / "forked", env={"MESH_LOG_FORMAT": "json"},
    launcher=launcher,
)
try:
    cluster.start()
    daemons = [cluster.coordinator, *cluster.nodes]
    facts["forked"] = [isinstance(d.process, ForkedProcess) for d in daemons]
    facts["children_of_launcher"] = [parent_of(d.pid) == launcher.pid for d in daemons]
    facts["own_sessions"] = [os.getsid(d.pid) == d.pid for d in daemons]
    status, collected = anyio.run(run_job, cluster.address, write_job(state, JOB))
    facts["state"], facts["collected"] = status["state"], sorted(collected)
    victim = cluster.nodes[1]
    cluster.kill(victim)
    facts["killed_code"] = victim.process.wait(30)
finally:
    cluster.stop()
facts["stopped_codes"] = [d.process.returncode for d in [cluster.coordinator, cluster.nodes[0]]]
try:
    os.kill(launcher.pid, 0)
    facts["launcher_reaped"] = False
except ProcessLookupError:
    facts["launcher_reaped"] = True
log = (state / "forked" / "logs" / "coordinator.log").read_text().splitlines()
facts["json_log"] = bool(log) and all(line.startswith("{") for line in log)

# The launcher has ended: a cluster given it starts its daemons the usual way.
again = LocalCluster(nodes=1, slots=2, state_dir=state / "usual", launcher=launcher)
try:
    again.start()
    usual = [again.coordinator, *again.nodes]
    facts["usual"] = [isinstance(d.process, subprocess.Popen) for d in usual]
    status, collected = anyio.run(run_job, again.address, write_job(state, JOB))
    facts["usual_state"], facts["usual_collected"] = status["state"], sorted(collected)
finally:
    again.stop()
print(json.dumps(facts))
"""

ORPHANED = r"""
import json, sys
from pathlib import Path
from mesh.client.launcher import Launcher
launcher = Launcher.start()
from mesh.client.local_cluster import LocalCluster
cluster = LocalCluster(nodes=1, slots=1, state_dir=Path(sys.argv[1]), launcher=launcher)
cluster.start()
print(json.dumps([launcher.pid, cluster.coordinator.pid, cluster.nodes[0].pid]), flush=True)
sys.stdin.read()  # until killed
"""

LAUNCHER_KILLED = r"""
import json, os, signal, sys, time
from pathlib import Path
from mesh.client.launcher import Launcher
launcher = Launcher.start()
from mesh.client.local_cluster import LocalCluster
cluster = LocalCluster(nodes=1, slots=1, state_dir=Path(sys.argv[1]), launcher=launcher)
cluster.start()
daemons = [cluster.coordinator, *cluster.nodes]
os.kill(launcher.pid, signal.SIGKILL)
codes = [d.process.wait(30) for d in daemons]
started = time.monotonic()
cluster.stop()
stop_s = time.monotonic() - started

def dead(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

deadline = time.monotonic() + 20
while not all(dead(d.pid) for d in daemons) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"codes": codes, "stop_s": stop_s, "dead": all(dead(d.pid) for d in daemons)}))
"""


def _script(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], cwd=ROOT, text=True, **popen
    )


def _facts(code: str, tmp_path: Path) -> dict[str, Any]:
    """What the scenario ``code`` found (its last line, JSON); it must exit 0."""
    with _script(code, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as script:
        try:
            out, err = script.communicate(timeout=120)
        finally:
            if script.poll() is None:
                script.kill()
                script.wait()
    assert script.returncode == 0, err
    facts: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return facts


def test_forked_daemons_run_jobs_die_alone_and_end_with_the_cluster(tmp_path: Path) -> None:
    facts = _facts(LIFE, tmp_path)
    squares = sorted(x * x for x in range(40))
    assert facts["forked"] == [True, True, True]
    assert facts["children_of_launcher"] == [True, True, True]
    assert facts["own_sessions"] == [True, True, True]  # a Ctrl-C reaches mesh run alone
    assert (facts["state"], facts["collected"]) == ("FINISHED", squares)
    assert facts["killed_code"] == -9  # as subprocess reports a SIGKILL
    assert facts["stopped_codes"] == [0, 0]
    assert facts["launcher_reaped"] is True
    assert facts["json_log"] is True  # the cluster's environment reached the daemon
    assert facts["usual"] == [True, True]
    assert (facts["usual_state"], facts["usual_collected"]) == ("FINISHED", squares)


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended too


def test_daemons_die_with_a_killed_mesh_run(tmp_path: Path) -> None:
    pids: list[int] = []
    with _script(ORPHANED, str(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE) as script:
        try:
            pids = json.loads(script.stdout.readline())  # type: ignore[union-attr]
            assert len(pids) == 3 and not any(_gone(pid) for pid in pids)
            script.kill()
            script.wait()
            poll_until_sync(
                lambda: [pid for pid in pids if not _gone(pid)],
                until=lambda alive: not alive,
                timeout_s=30,
                what="the launcher and its daemons to die with their parent",
            )
        finally:
            if script.poll() is None:
                script.kill()
                script.wait()
            for pid in pids:
                if not _gone(pid):
                    os.kill(pid, 9)


def test_a_killed_launcher_takes_its_daemons_and_says_so(tmp_path: Path) -> None:
    facts = _facts(LAUNCHER_KILLED, tmp_path)
    assert facts["codes"] == [-9, -9]
    assert facts["dead"] is True
    assert facts["stop_s"] < 5  # nothing left to wait for
