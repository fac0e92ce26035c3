"""The chaos harness: a real cluster, the sequence-check job, faults, and the verdict.

``ChaosRun`` starts a coordinator and nodes as subprocesses (``LocalCluster``), submits
the per-key sequence job (``tests/jobs/seqcheck.py``: values 1..N per key, a keyed
checker, an exactly-once sink), lets the caller inject faults — ``kill -9`` of a node
or of the coordinator, SIGSTOP/SIGCONT, fault points that kill a daemon at an exact
instant (``mesh/faults.py``) — and finally compares the committed output with the
reference: every (key, seq) exactly once, no checker alerts.

The coordinator may be down while a scenario runs, so every request opens a fresh
client and is retried until its deadline. Waiting is polling the coordinator under a
deadline (``tests.helpers.poll_until``): a checkpoint completing or a job restarting is an
event in another process, with nothing local to wait on.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson

from mesh.client.client import open_client, prepare_submission
from mesh.client.local_cluster import DaemonProcess, LocalCluster
from mesh.errors import RemoteError
from tests.helpers import poll_until, status_summary

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "tests" / "jobs" / "seqcheck.py"
FINAL = ("FINISHED", "CANCELED", "FAILED")
# Checkpoint rows that completed (DISCARDED ones completed and were removed later).
COMPLETED = ("COMPLETED", "DISCARDED")


@dataclass(frozen=True)
class SeqJob:
    """The sequence job's shape (passed to it through SEQ_* environment variables)."""

    keys: int = 12
    n: int = 1500
    rate: float = 3000.0  # records/s over all keys (0: unlimited)
    interval: str = "200ms"
    backend: str = "memory"
    sink: str = "jsonlines"
    restarts: int | None = 10  # a fixed-delay strategy; None: mesh's default strategy
    restart_delay: str = "100ms"
    poison: str = ""  # SEQ_POISON: "key:seq" records whose processing raises
    on_error: str = "fail"

    def env(self, out: Path) -> dict[str, str]:
        env = {
            "SEQ_KEYS": str(self.keys),
            "SEQ_N": str(self.n),
            "SEQ_RATE": str(self.rate),
            "SEQ_OUT": str(out),
            "SEQ_BACKEND": self.backend,
            "SEQ_INTERVAL": self.interval,
            "SEQ_SINK": self.sink,
            "SEQ_RESTART_DELAY": self.restart_delay,
            "SEQ_ON_ERROR": self.on_error,
            "SEQ_DEAD": str(out.parent / "dead"),
        }
        if self.restarts is not None:
            env["SEQ_RESTARTS"] = str(self.restarts)
        if self.poison:
            env["SEQ_POISON"] = self.poison
        return env


@dataclass
class Verdict:
    """What the committed output holds, against the reference."""

    records: int
    expected: int
    lost: int
    duplicates: int
    alerts: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and not self.alerts

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "expected": self.expected,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "alerts": len(self.alerts),
            "dead_letters": len(self.dead_letters),
        }


class ChaosRun:
    """One cluster, one sequence job, and the faults a scenario injects."""

    def __init__(
        self,
        workdir: Path,
        job: SeqJob,
        *,
        nodes: int = 3,
        slots: int = 2,
        heartbeat_interval: str = "200ms",
        heartbeat_timeout: str = "1s",
        node_env: dict[str, dict[str, str]] | None = None,
        coordinator_env: dict[str, str] | None = None,
        seed: int = 0,
        job_file: Path = JOB,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.job = job
        self.job_file = job_file
        self.out = workdir / "out"
        self.random = random.Random(seed)
        for key in [k for k in os.environ if k.startswith("SEQ_")]:
            del os.environ[key]
        os.environ.update(job.env(self.out))  # the client imports the job file too
        os.environ.update(env or {})
        heartbeats = (
            {
                "MESH_HEARTBEAT_INTERVAL": heartbeat_interval,
                "MESH_HEARTBEAT_TIMEOUT": heartbeat_timeout,
            }
            if heartbeat_interval
            else {}  # the defaults
        )
        self.cluster = LocalCluster(
            nodes=1,
            slots=slots,
            state_dir=workdir / "cluster",
            env={**job.env(self.out), **(env or {}), **heartbeats},
            log_level="debug" if os.environ.get("MESH_TEST_DEBUG") else "info",
        )
        self._node_env = node_env or {}
        self._coordinator_env = coordinator_env
        self._nodes = nodes
        self.job_id = ""
        self.events: list[tuple[float, str]] = []  # (monotonic s, what happened)

    # -- cluster --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the coordinator and the nodes; ``node_env`` (by node name) applies to
        node-2 and later (node-1 starts with the cluster)."""
        self.cluster.start()
        if self._coordinator_env:
            self.cluster.restart_coordinator(env=self._coordinator_env)
        while len(self.cluster.nodes) < self._nodes:
            name = f"node-{len(self.cluster.nodes) + 1}"
            self.cluster.add_node(env=self._node_env.get(name))
        # A coordinator restarted with its own settings learns of node-1 only when node-1
        # registers again.
        anyio.run(self.wait_nodes, self._nodes)

    def stop(self) -> None:
        for node in self.cluster.nodes:  # a stopped process ignores SIGTERM until resumed
            if node.alive():
                node.process.send_signal(signal.SIGCONT)
        self.cluster.stop()

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def kill(self, daemon: DaemonProcess, sig: int = signal.SIGKILL) -> None:
        self.note(f"{signal.Signals(sig).name} {daemon.name}")
        self.cluster.kill(daemon, sig)

    def node(self, name: str) -> DaemonProcess:
        return next(n for n in self.cluster.nodes if n.name == name)

    def add_node(self) -> DaemonProcess:
        node = self.cluster.add_node()
        self.note(f"started {node.name}")
        return node

    def restart_coordinator(self) -> None:
        self.cluster.restart_coordinator()
        self.note("coordinator restarted")

    # -- requests (the coordinator may be down) --------------------------------------------

    async def request(self, call: Any, *, timeout_s: float = 60.0) -> Any:
        """``call(client)`` against the coordinator, retried while it does not answer."""

        async def attempt() -> tuple[bool, Any]:
            try:
                async with open_client(self.cluster.address, timeout_s=2.0) as client:
                    return True, await call(client)
            except (TimeoutError, OSError) as error:
                return False, error  # down or restarting: ask again

        _, result = await poll_until(
            attempt,
            until=lambda answered: answered[0],
            timeout_s=timeout_s,
            interval_s=0.1,
            what="the coordinator to answer",
        )
        return result

    async def submit(self) -> str:
        submission = prepare_submission(self.job_file, base_dir=self.workdir)
        self.job_id = await self.request(lambda c: c.submit(submission))
        self.note("submitted")
        return self.job_id

    async def status(self) -> dict[str, Any]:
        return dict(await self.request(lambda c: c.status(self.job_id)))

    async def checkpoints(self) -> list[dict[str, Any]]:
        return list(await self.request(lambda c: c.checkpoints(self.job_id)))

    async def wait(self, predicate: Any, what: str, *, timeout_s: float = 60.0) -> Any:
        """Poll the job's status until ``predicate(status)`` holds; returns the status."""

        async def status() -> dict[str, Any]:
            try:
                return await self.status()
            except RemoteError:
                return {}

        return await poll_until(
            status,
            until=lambda s: bool(s) and predicate(s),
            timeout_s=timeout_s,
            what=what,
            show=status_summary,
        )

    async def wait_running(self, *, attempt_above: int = -1, timeout_s: float = 60.0) -> Any:
        """Until the job runs every subtask (of an attempt above ``attempt_above``)."""

        def running(s: dict[str, Any]) -> bool:
            if s["state"] in FINAL:
                raise AssertionError(f"job ended {s['state']}: {s['error']}")
            subtasks = [st for t in s["tasks"] for st in t["subtasks"]]
            return (
                s["state"] == "RUNNING"
                and s["attempt"] > attempt_above
                and all(st["state"] in ("RUNNING", "ENDING", "FINISHED") for st in subtasks)
            )

        return await self.wait(running, f"attempt > {attempt_above} running", timeout_s=timeout_s)

    async def wait_checkpoint(self, *, after: int = 0, timeout_s: float = 60.0) -> int:
        """Until a checkpoint with an id above ``after`` completed; returns its id."""

        async def newest() -> int:
            history = await self.checkpoints()
            return max((c["checkpoint_id"] for c in history if c["state"] in COMPLETED), default=0)

        return await poll_until(
            newest,
            until=lambda newest: newest > after,
            timeout_s=timeout_s,
            interval_s=0.02,
            what=f"a checkpoint above {after} to complete",
        )

    async def wait_nodes(self, count: int, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Until ``count`` nodes are registered."""
        nodes: list[dict[str, Any]] = await poll_until(
            lambda: self.request(lambda c: c.nodes()),
            until=lambda nodes: len(nodes) == count,
            timeout_s=timeout_s,
            interval_s=0.1,
            what=f"{count} registered nodes",
        )
        return nodes

    async def wait_logged(
        self, text: str, daemons: list[DaemonProcess], *, timeout_s: float = 20.0
    ) -> None:
        """Until every one of ``daemons`` has logged ``text``."""
        await poll_until(
            lambda: [d.name for d in daemons if text not in d.log_tail(200)],
            until=lambda missing: not missing,
            timeout_s=timeout_s,
            interval_s=0.1,
            what=f"{text!r} in the logs (last value: the daemons yet to log it)",
        )

    async def wait_exit(self, daemon: DaemonProcess, *, timeout_s: float = 30.0) -> int:
        """Until ``daemon`` exits (a fault point killed it); returns its exit code."""
        code: int = await anyio.to_thread.run_sync(daemon.process.wait, timeout_s)
        self.note(f"{daemon.name} exited with {code}")
        return code

    async def wait_final(self, *, timeout_s: float = 120.0) -> dict[str, Any]:
        status: dict[str, Any] = await self.wait(
            lambda s: s["state"] in FINAL, "the job to end", timeout_s=timeout_s
        )
        self.note(f"ended {status['state']}")
        return status

    def nodes_of(self, status: dict[str, Any]) -> list[str]:
        """Names of the nodes running part of the job, sorted."""
        return sorted({st["node"] for t in status["tasks"] for st in t["subtasks"] if st["node"]})

    # -- the verdict ----------------------------------------------------------------------

    def committed(self) -> list[dict[str, Any]]:
        """Every record the sink committed."""
        if self.job.sink == "sqlite":
            with sqlite3.connect(self.out / "out.db") as conn:
                conn.row_factory = sqlite3.Row
                rows = conn.execute("SELECT * FROM records").fetchall()
            return [{k: row[k] for k in row.keys() if row[k] is not None} for row in rows]  # noqa: SIM118
        records = []
        for path in sorted(self.out.glob("part-*.jsonl")):
            records.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
        return records

    def dead_letters(self) -> list[dict[str, Any]]:
        records = []
        for path in sorted((self.workdir / "dead").glob("part-*.jsonl")):
            records.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
        return records

    def verdict(self, *, skipped: frozenset[tuple[int, int]] = frozenset()) -> Verdict:
        """Compare the committed output with the reference; ``skipped`` (key, seq) pairs
        are expected to be missing (dead letters)."""
        job = self.job
        records = self.committed()
        alerts = [r for r in records if "alert" in r]
        counts = collections.Counter((r["key"], r["seq"]) for r in records if "alert" not in r)
        expected = {
            (k, s) for k in range(job.keys) for s in range(1, job.n + 1) if (k, s) not in skipped
        }
        lost = len(expected - set(counts))
        duplicates = sum(c - 1 for c in counts.values() if c > 1) + len(set(counts) - expected)
        return Verdict(
            records=len(records),
            expected=len(expected),
            lost=lost,
            duplicates=duplicates,
            alerts=alerts,
            dead_letters=self.dead_letters(),
        )

    def leftovers(self) -> list[str]:
        """Uncommitted output the sink left behind (there should be none once it ended)."""
        if self.job.sink == "sqlite":
            with sqlite3.connect(self.out / "out.db") as conn:
                staged = conn.execute("SELECT count(*) FROM _mesh_staging").fetchone()[0]
            return [f"{staged} staged rows"] if staged else []
        return sorted(p.name for p in self.out.glob(".part-*"))


def assert_exact(run: ChaosRun, final: dict[str, Any]) -> None:
    """The job finished, and its committed output is every (key, seq) exactly once."""
    assert final["state"] == "FINISHED", final["error"]
    verdict = run.verdict()
    assert verdict.as_dict() == {
        "records": verdict.expected,
        "expected": verdict.expected,
        "lost": 0,
        "duplicates": 0,
        "alerts": 0,
        "dead_letters": 0,
    }
    assert run.leftovers() == []
