"""A mesh cluster whose daemons run on the hosts of a ``NetworkLab`` (tests/netns.py).

The coordinator runs on one host and binds its address there; each node runs on a host
of its own, binds and advertises that host's address; a client host runs the ``mesh``
commands, as a user on another machine would. Readiness comes over sd_notify (a socket
path works across network namespaces). Daemon logs go to ``log_dir``.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mesh.systemd import NotifyListener
from tests.netns import NetworkLab

__all__ = ["HostCluster", "HostDaemon"]

COORDINATOR_PORT = 5550


@dataclass
class HostDaemon:
    """One daemon on one lab host."""

    name: str
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """Its log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class HostCluster:
    """Daemons on lab hosts; stop them with ``close`` (the lab kills what is left)."""

    lab: NetworkLab
    work_dir: Path
    coordinator_host: str
    extra_args: list[str] = field(default_factory=list)  # for every daemon
    client_args: list[str] = field(default_factory=list)  # for every mesh command
    env: dict[str, str] = field(default_factory=dict)
    # (delay, jitter) in ms: every daemon is reached through a delay proxy on its host
    # (tests/delay_proxy.py), at a second address of that host; None: directly.
    latency: tuple[float, float] | None = None
    daemons: dict[str, HostDaemon] = field(default_factory=dict)
    _listener: NotifyListener = field(default_factory=NotifyListener)
    _proxied: set[str] = field(default_factory=set)

    def dial_host(self, host: str) -> str:
        """The address others use to reach ``host``'s daemon (its proxy's, with latency)."""
        address = self.lab.addresses[host]
        if self.latency is None:
            return address
        prefix, _, last = address.rpartition(".")
        return f"{prefix}.{int(last) + 100}"

    @property
    def address(self) -> str:
        """The coordinator's address, as clients and nodes dial it."""
        return f"tcp://{self.dial_host(self.coordinator_host)}:{COORDINATOR_PORT}"

    def _proxy(self, host: str, ports: list[int]) -> None:
        """Delay everything sent to ``host``'s ``ports`` (reached at its dial address)."""
        assert self.latency is not None
        real, dial = self.lab.addresses[host], self.dial_host(host)
        if dial not in self._proxied:
            self.lab.add_address(host, dial)
            self._proxied.add(dial)
        delay, jitter = self.latency
        process = self.lab.popen(
            host,
            [
                sys.executable,
                "-m",
                "tests.delay_proxy",
                "--delay-ms",
                str(delay),
                "--jitter-ms",
                str(jitter),
                *(f"{dial}:{port}={real}:{port}" for port in ports),
            ],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert process.stdout is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], 30)
            line = process.stdout.readline() if ready else b""
        finally:
            process.stdout.close()  # it prints nothing after "ready"
        assert line.strip() == b"ready", f"the proxy on {host} did not start"

    @property
    def log_dir(self) -> Path:
        path = self.work_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, host: str, argv: list[str]) -> HostDaemon:
        env = {
            **os.environ,
            **self.env,
            "NOTIFY_SOCKET": self._listener.path,
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("MESH_COORDINATOR", None)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = self.lab.popen(
                host,
                [sys.executable, "-m", "mesh", *argv, "--log-level", "info"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        daemon = HostDaemon(name, host, process, log_path)
        self.daemons[name] = daemon
        return daemon

    def start_coordinator(self, *args: str, wait: bool = True) -> HostDaemon:
        """Start the coordinator on its host (ready on return unless ``wait`` is False)."""
        daemon = self._spawn(
            "coordinator",
            self.coordinator_host,
            [
                "coordinator",
                "--bind",
                f"tcp://{self.lab.addresses[self.coordinator_host]}:{COORDINATOR_PORT}",
                "--state-dir",
                str(self.work_dir / "coordinator"),
                *self.extra_args,
                *args,
            ],
        )
        if self.latency is not None:
            self._proxy(self.coordinator_host, [COORDINATOR_PORT])
        if wait:
            self.wait_ready([daemon])
        return daemon

    def start_node(self, host: str, *args: str, slots: int = 2, wait: bool = True) -> HostDaemon:
        """Start a node on ``host``, named after it."""
        address = self.lab.addresses[host]
        daemon = self._spawn(
            host,
            host,
            [
                "node",
                "--coordinator",
                self.address,
                "--node-id",
                host,
                "--slots",
                str(slots),
                "--bind-host",
                address,
                "--advertise-host",
                self.dial_host(host),
                "--state-dir",
                str(self.work_dir / host),
                *self.extra_args,
                *args,
            ],
        )
        if wait:
            self.wait_ready([daemon])
        return daemon

    def wait_ready(self, daemons: list[HostDaemon], timeout_s: float = 60) -> None:
        """Until each of ``daemons`` said READY=1 (raises if one exits first)."""
        pending = {str(d.process.pid): d for d in daemons}
        deadline = time.monotonic() + timeout_s
        while pending:
            for daemon in pending.values():
                if daemon.process.poll() is not None:
                    raise AssertionError(
                        f"{daemon.name} exited with {daemon.process.returncode}:\n{daemon.log()}"
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{', '.join(pending)} not ready in {timeout_s:g}s")
            readable, _, _ = select.select([self._listener], [], [], min(remaining, 0.5))
            if readable:
                fields = self._listener.receive(0)
                if fields and fields.get("READY") == "1":
                    found = pending.pop(fields.get("MAINPID", ""), None)
                    if found is not None:
                        found.ready = fields
                        if self.latency is not None and "MESH_DATA_ENDPOINT" in fields:
                            ports = [
                                int(fields[key].rpartition(":")[2])
                                for key in ("MESH_DATA_ENDPOINT", "MESH_CONTROL_ENDPOINT")
                            ]
                            self._proxy(found.host, ports)

    def mesh(self, host: str, *args: str, timeout_s: float = 60) -> str:
        """Run a ``mesh`` client command on ``host`` against the coordinator, in the
        cluster's work directory (where relative job paths resolve)."""
        return self.lab.run(
            host,
            [
                sys.executable,
                "-m",
                "mesh",
                *args,
                "--coordinator",
                self.address,
                *self.client_args,
            ],
            timeout_s=timeout_s,
            cwd=self.work_dir,
        )

    def status(self, host: str, job_id: str) -> dict[str, Any]:
        """``mesh status JOB --json`` from ``host``."""
        status: dict[str, Any] = orjson.loads(self.mesh(host, "status", job_id, "--json"))
        return status

    def close(self) -> None:
        """SIGTERM every daemon, then the lab kills what is left."""
        for daemon in self.daemons.values():
            if daemon.process.poll() is None:
                daemon.process.terminate()
        for daemon in self.daemons.values():
            try:
                daemon.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
        self._listener.close()
