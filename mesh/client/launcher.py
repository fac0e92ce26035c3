"""Daemons forked from a process that has already imported them, for ``mesh run``.

A daemon started as a new interpreter spends most of its start-up importing mesh
(0.2-0.3 s of CPU each, three or more processes on a laptop's cores). ``mesh run``
instead forks a *launcher* first thing, before it imports anything itself: while the
command parses its flags and reads the job, the launcher imports the daemons' code on
another core; the coordinator and nodes are then forked from it, ready to run.

The launcher is a child of ``mesh run`` and the daemons are its children, so it reaps
them and reports their exit codes; ``mesh run`` sees each as a :class:`ForkedProcess`
(what ``subprocess.Popen`` offers the local cluster). Each daemon is what the command
line would have started: its own session, stdin from /dev/null, stderr to its log,
stdout shared, the environment it would have had, killed if the launcher dies (which
dies with ``mesh run``). The launcher forks only while it is single-threaded (fork
copies no other thread); otherwise it says so and the daemon is started the usual way.

Requests and replies are JSON lines over two pipes: ``{"role", "args", "env", "log"}``
answered by ``{"pid"}`` or ``{"error"}``; ``{"exit": pid, "code": n}`` whenever a
daemon ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

from mesh.errors import MeshError

__all__ = ["ForkedProcess", "Launcher", "early_launcher", "start_early_launcher"]

_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1
# What a daemon needs, imported once in the launcher; then, unless ``mesh run`` is
# already waiting for daemons, what a node of ``mesh run`` needs next: its job arrives
# at once (else the node imports it then). Not the web stack: every daemon would carry
# its 5 MB, and the coordinator imports it in a thread once ready.
_PRELOAD = (
    "mesh.commands.daemon_main",
    "mesh.commands.service",
    "mesh.coordinator.daemon",
    "mesh.node.daemon",
)
_PRELOAD_WHILE_IDLE = ("mesh.node.runtime.job",)

_early: Launcher | None = None


def start_early_launcher() -> None:
    """Fork the launcher now (``mesh run``, before its own imports); a platform without
    fork or pidfds, or a failing fork, leaves none."""
    global _early
    if _early is None:
        _early = Launcher.start()


def early_launcher() -> Launcher | None:
    """The launcher :func:`start_early_launcher` forked, if any (taken once)."""
    global _early
    launcher, _early = _early, None
    return launcher


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent ends (and now, if it already has)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


def _name_process(name: str) -> None:
    """What ``ps`` and ``top`` show (the command line stays the launcher's)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15])
    except (OSError, AttributeError):
        pass


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class ForkedProcess:
    """A daemon the launcher forked, with the part of ``subprocess.Popen`` the local
    cluster uses."""

    def __init__(self, launcher: Launcher, pid: int, args: list[str]) -> None:
        self._launcher = launcher
        self.pid = pid
        self.args = args

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), once it has ended."""
        return self._launcher.exit_code(self.pid)

    def poll(self) -> int | None:
        """The exit code if it has ended, else None."""
        self._launcher.pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to end; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._launcher.pump(left)

    def send_signal(self, sig: int) -> None:
        """Send ``sig``, unless it has ended (its pid may be another process's by now)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


class Launcher:
    """``mesh run``'s end of the launcher: asks it to fork daemons, hears them end."""

    def __init__(self, pid: int, requests: int, replies: int) -> None:
        self.pid = pid
        self._requests = requests
        self._replies = replies
        self._buffer = b""
        self._exits: dict[int, int] = {}
        self._forked: set[int] = set()
        self._answers: list[dict[str, Any]] = []
        self._gone = False

    @classmethod
    def start(cls) -> Launcher | None:
        """Fork the launcher; None where that cannot be done."""
        if not hasattr(os, "fork") or not hasattr(os, "pidfd_open"):
            return None
        if not _single_threaded():
            return None
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            for fd in (requests_r, requests_w, replies_r, replies_w):
                os.close(fd)
            return None
        if pid == 0:  # pragma: no cover - runs in the launcher
            os.close(requests_w)
            os.close(replies_r)
            _serve(parent, requests_r, replies_w)
        os.close(requests_r)
        os.close(replies_w)
        os.set_inheritable(requests_w, False)
        os.set_inheritable(replies_r, False)
        return cls(pid, requests_w, replies_r)

    def spawn(self, role: str, args: list[str], env: Mapping[str, str], log: str) -> ForkedProcess:
        """Fork a ``role`` daemon run as ``mesh ROLE ARGS...`` would be; MeshError if the
        launcher could not."""
        if self._gone:
            raise MeshError("the daemon launcher has ended")
        request = orjson.dumps({"role": role, "args": args, "env": dict(env), "log": log})
        try:
            view = memoryview(request + b"\n")
            while view:  # a signal may cut a write short
                view = view[os.write(self._requests, view) :]
        except OSError as exc:
            self._gone = True
            raise MeshError(f"the daemon launcher is gone: {exc}") from None
        while not self._answers:
            if self._gone:
                raise MeshError("the daemon launcher ended before it answered")
            self.pump(None)
        answer = self._answers.pop(0)
        if "pid" not in answer:
            raise MeshError(f"the daemon launcher could not fork a {role}: {answer.get('error')}")
        pid = int(answer["pid"])
        self._forked.add(pid)
        return ForkedProcess(self, pid, ["mesh", role, *args])

    def exit_code(self, pid: int) -> int | None:
        """How daemon ``pid`` ended, if it has."""
        return self._exits.get(pid)

    def pump(self, timeout: float | None) -> None:
        """Take in what the launcher said, waiting up to ``timeout`` seconds for it."""
        if self._gone:
            return
        readable, _, _ = select.select([self._replies], [], [], timeout)
        if not readable:
            return
        data = os.read(self._replies, 65536)
        if not data:
            self._gone = True
            for pid in self._forked - self._exits.keys():
                self._exits[pid] = -signal.SIGKILL  # what a launcher's end does to them
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            said = orjson.loads(line)
            if "exit" in said:
                self._exits[int(said["exit"])] = int(said["code"])
            else:
                self._answers.append(said)

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the launcher go (it kills any daemon still running) and reap it; killed
        if it has not gone within ``timeout_s`` (still importing, say)."""
        with contextlib.suppress(OSError):
            os.close(self._requests)
        with contextlib.suppress(OSError):
            os.close(self._replies)
        self._gone = True
        deadline = time.monotonic() + timeout_s
        try:
            while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                if time.monotonic() >= deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    return
                time.sleep(0.005)
        except ChildProcessError:
            pass


# -- the launcher's side ----------------------------------------------------------------------


def _serve(parent: int, requests: int, replies: int) -> NoReturn:  # pragma: no cover
    """The launcher: preload, then fork daemons on request until ``mesh run`` closes
    the pipe. Runs in the forked child; never returns."""
    try:
        os.setsid()  # a Ctrl-C in the terminal is for mesh run alone
        _die_with_parent(parent)
        _name_process("mesh-launcher")
        import importlib

        for module in _PRELOAD:
            importlib.import_module(module)
        for module in _PRELOAD_WHILE_IDLE:
            if select.select([requests], [], [], 0)[0]:
                break
            importlib.import_module(module)
        gc.freeze()  # a daemon's collections then leave the shared pages unwritten
        children: dict[int, int] = {}  # pidfd -> pid
        buffer = b""
        while True:
            readable, _, _ = select.select([requests, *children], [], [])
            for fd in readable:
                if fd == requests:
                    data = os.read(requests, 1 << 20)
                    if not data:
                        for pid in children.values():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                        os._exit(0)
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        answer = _fork_daemon(orjson.loads(line), requests, replies, children)
                        os.write(replies, orjson.dumps(answer) + b"\n")
                else:
                    pid = children.pop(fd)
                    os.close(fd)
                    _, status = os.waitpid(pid, 0)
                    code = os.waitstatus_to_exitcode(status)
                    os.write(replies, orjson.dumps({"exit": pid, "code": code}) + b"\n")
    except BaseException:  # its end is the pipe's EOF, or a kill
        os._exit(1)


def _fork_daemon(  # pragma: no cover - runs in the launcher
    request: dict[str, Any], requests: int, replies: int, children: dict[int, int]
) -> dict[str, Any]:
    if not _single_threaded():
        return {"error": "the launcher has threads (fork would copy only one)"}
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        return {"error": f"cannot open {request['log']}: {exc}"}
    launcher = os.getpid()
    gc.freeze()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(log)
        return {"error": f"fork: {exc}"}
    if pid == 0:
        _become_daemon(launcher, request, log, [requests, replies, *children])
    os.close(log)
    children[os.pidfd_open(pid)] = pid
    return {"pid": pid}


def _become_daemon(  # pragma: no cover - runs in the forked daemon
    launcher: int, request: dict[str, Any], log: int, inherited: list[int]
) -> NoReturn:
    code: int = 1
    try:
        os.setsid()
        _die_with_parent(launcher)
        _name_process(f"mesh-{'coord' if request['role'] == 'coordinator' else 'node'}")
        for fd in inherited:
            os.close(fd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(log, 2)
        os.close(stdin)
        os.close(log)
        for stream in (sys.stdout, sys.stderr):
            # as PYTHONUNBUFFERED, which a fresh interpreter would have been given
            stream.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        role, args = request["role"], list(request["args"])
        sys.argv = ["mesh", role, *args]
        from mesh.commands.daemon_main import main

        if main(role, args):
            code = 0
        else:
            print(f"error: cannot read the {role} flags {args}", file=sys.stderr)
            code = 2
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # said in the log, as an interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
