"""An embedded cluster on this machine: a coordinator and N nodes as subprocesses.

``mesh run`` and the integration tests use it. Daemons bind free ports on 127.0.0.1 (the
coordinator one picked here, so that the nodes start alongside it) and report them,
once ready, over the sd_notify protocol to a socket this process listens
on. They run in their own session (a Ctrl-C in the terminal reaches only the client,
which then stops them in order) and, on Linux, are killed if this process dies.
Their stderr goes to log files under ``<state_dir>/logs``; stdout (``Print`` sinks)
is inherited.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from mesh.client.launcher import ForkedProcess, Launcher
from mesh.config import COORDINATOR_SETTINGS, NODE_SETTINGS
from mesh.errors import MeshError
from mesh.systemd import NotifyListener

__all__ = ["DaemonProcess", "LocalCluster"]

_PR_SET_PDEATHSIG = 1
# Starts on a fresh port when the picked one was taken before the coordinator bound it.
_START_ATTEMPTS = 3


def _free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


@dataclass(eq=False)
class DaemonProcess:
    """One daemon the cluster started."""

    role: str
    name: str
    process: subprocess.Popen[bytes] | ForkedProcess
    log_path: Path
    ready: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the daemon's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalCluster:
    """Starts, tracks and stops a coordinator and nodes on 127.0.0.1."""

    def __init__(
        self,
        *,
        nodes: int = 2,
        slots: int = 2,
        state_dir: str | Path,
        env: dict[str, str] | None = None,
        coordinator_args: list[str] | None = None,
        node_args: list[str] | None = None,
        log_level: str = "info",
        stdout: IO[bytes] | int | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        if nodes < 1:
            raise MeshError(f"a local cluster needs at least one node, got {nodes}")
        self.node_count = nodes
        self.slots = slots
        self.state_dir = Path(state_dir).resolve()
        self.log_dir = self.state_dir / "logs"
        self._env = dict(env or {})
        self._coordinator_args = coordinator_args or []
        self._node_args = node_args or []
        self._log_level = log_level
        self._stdout = stdout
        # Forks the daemons, already imported, when given (``mesh run``); stdout shared.
        self._launcher = launcher if stdout is None else None
        self._listener: NotifyListener | None = None
        self.coordinator: DaemonProcess | None = None
        self.nodes: list[DaemonProcess] = []
        self.address = ""
        self._node_counter = 0

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the coordinator and the nodes together; return once all are ready.

        The coordinator's port is picked here (a free one, released just before the
        coordinator binds it) so that the nodes can start alongside it: each starts up
        while the coordinator does, and its registration waits in its socket until the
        coordinator listens. Should another process take the port in between, the
        cluster starts again on another.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._listener = NotifyListener()
        try:
            log = self.log_dir / "coordinator.log"
            for attempt in range(_START_ATTEMPTS):
                self.address = f"tcp://127.0.0.1:{_free_port()}"
                logged_before = log.stat().st_size if log.exists() else 0
                self.coordinator = self._spawn_coordinator()
                for _ in range(self.node_count):
                    self.add_node(wait=False)
                try:
                    self._wait_ready([self.coordinator, *self.nodes], timeout_s)
                    return
                except MeshError:
                    coordinator = self.coordinator
                    if attempt + 1 == _START_ATTEMPTS or coordinator.alive():
                        raise
                    with open(log, "rb") as f:  # what this attempt logged
                        f.seek(logged_before)
                        said = f.read().decode(errors="replace").lower()
                    if "address already in use" not in said:
                        raise
                    # The port was taken: again, on another.
                    self._terminate([*self.nodes, coordinator], time.monotonic() + 5)
                    self.nodes, self._node_counter = [], 0
        except BaseException:
            self.stop()
            raise

    @property
    def http_url(self) -> str | None:
        """The coordinator's dashboard, when it serves one (``--http``)."""
        return self.coordinator.ready.get("MESH_HTTP") if self.coordinator else None

    def restart_coordinator(
        self, *, env: dict[str, str] | None = None, timeout_s: float = 30.0
    ) -> DaemonProcess:
        """Start the coordinator again on the same address and state directory (after it
        died or was killed; a live one is killed first). Nodes reconnect on their own."""
        old = self.coordinator
        if old is not None:
            if old.alive():
                old.process.kill()
            old.process.wait()
        self.coordinator = self._spawn_coordinator(env)
        self._wait_ready([self.coordinator], timeout_s)
        return self.coordinator

    def add_node(
        self,
        *,
        slots: int | None = None,
        wait: bool = True,
        timeout_s: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> DaemonProcess:
        """Start one more node (ready on return unless ``wait`` is False); ``env`` adds
        environment variables for this node only."""
        self._node_counter += 1
        name = f"node-{self._node_counter}"
        node = self._spawn(
            "node",
            name,
            [
                "node",
                "--coordinator",
                self.address,
                "--slots",
                str(slots or self.slots),
                "--state-dir",
                str(self.state_dir / name),
                "--node-id",
                name,
                *self._node_args,
            ],
            env=env,
        )
        self.nodes.append(node)
        if wait:
            self._wait_ready([node], timeout_s)
        return node

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every daemon (SIGTERM, then SIGKILL after ``timeout_s``); idempotent.

        Nodes go first, so they can tell the coordinator they are leaving; the coordinator
        then gets ``timeout_s`` of its own."""
        self._terminate(self.nodes, time.monotonic() + timeout_s)
        self._terminate(
            [self.coordinator] if self.coordinator else [], time.monotonic() + timeout_s
        )
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _terminate(daemons: list[DaemonProcess], deadline: float) -> None:
        for daemon in daemons:
            if daemon.alive():
                with contextlib.suppress(ProcessLookupError):
                    daemon.process.send_signal(signal.SIGTERM)
        for daemon in daemons:
            try:
                daemon.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()

    def _spawn_coordinator(self, env: dict[str, str] | None = None) -> DaemonProcess:
        state = str(self.state_dir / "coordinator")
        args = ["coordinator", "--bind", self.address, "--state-dir", state]
        return self._spawn("coordinator", "coordinator", [*args, *self._coordinator_args], env)

    def _spawn(
        self, role: str, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> DaemonProcess:
        assert self._listener is not None
        extra = env or {}
        full = {**os.environ, **self._env, **extra, "NOTIFY_SOCKET": self._listener.path}
        full.setdefault("PYTHONUNBUFFERED", "1")
        for setting in (*COORDINATOR_SETTINGS, *NODE_SETTINGS):
            if setting.env not in self._env and setting.env not in extra:
                # the user's own daemon settings stay out
                full.pop(setting.env, None)
        log_path = self.log_dir / f"{name}.log"
        if self._launcher is not None:
            try:
                forked = self._launcher.spawn(
                    args[0], [*args[1:], "--log-level", self._log_level], full, str(log_path)
                )
            except MeshError:
                self._launcher = None  # started the usual way from now on
            else:
                return DaemonProcess(role=role, name=name, process=forked, log_path=log_path)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mesh", *args, "--log-level", self._log_level],
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=log,
                env=full,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        return DaemonProcess(role=role, name=name, process=process, log_path=log_path)

    def _wait_ready(self, daemons: list[DaemonProcess], timeout_s: float) -> None:
        assert self._listener is not None
        pending = {str(d.pid): d for d in daemons if not d.ready}
        deadline = time.monotonic() + timeout_s
        while pending:
            for daemon in pending.values():
                if not daemon.alive():
                    raise MeshError(
                        f"{daemon.name} exited with code {daemon.process.returncode} before it "
                        f"was ready; its log ({daemon.log_path}) ends with:\n{daemon.log_tail()}"
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = ", ".join(d.name for d in pending.values())
                raise MeshError(f"{names} not ready within {timeout_s:g}s (logs in {self.log_dir})")
            readable, _, _ = select.select([self._listener], [], [], min(remaining, 0.2))
            if not readable:
                continue
            fields = self._listener.receive(0)
            if fields and fields.get("READY") == "1":
                pid = fields.get("MAINPID", "")
                if pid in pending:
                    pending.pop(pid).ready = fields

    def kill(self, daemon: DaemonProcess, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a daemon (for fault injection)."""
        daemon.process.send_signal(sig)
