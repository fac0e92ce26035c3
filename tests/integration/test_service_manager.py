"""The daemons under a service manager: what they send on ``$NOTIFY_SOCKET`` (READY,
STATUS, EXTEND_TIMEOUT_USEC, WATCHDOG) and how the coordinator stops on SIGTERM.

The daemons are real subprocesses; the notification socket is the test's own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.config import COORDINATOR_SETTINGS, NODE_SETTINGS
from mesh.systemd import EXTEND_TIMEOUT_USEC, NotifyListener
from tests.helpers import poll_until_sync, wait_for_state, write_job

Message = dict[str, str]
Spawn = Callable[..., subprocess.Popen[bytes]]

ENDLESS = """
    from mesh import Job, sinks, sources

    job = Job("endless", parallelism=1)
    job.source(sources.Generator(lambda i: i, rate=50)).sink(sinks.Collect())
"""


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    notify = NotifyListener()
    try:
        yield notify
    finally:
        notify.close()


@pytest.fixture
def spawn(listener: NotifyListener, tmp_path: Path) -> Iterator[Spawn]:
    """Start ``python -m mesh ARGS`` reporting to ``listener``; all killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        full = {**os.environ, "NOTIFY_SOCKET": listener.path, "PYTHONUNBUFFERED": "1"}
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
            full.pop(name, None)
        for setting in (*COORDINATOR_SETTINGS, *NODE_SETTINGS):
            full.pop(setting.env, None)
        full.update(env or {})
        log = tmp_path / f"{args[0]}-{len(started)}.log"
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "mesh", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=full,
                preexec_fn=preexec_fn,
            )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()


def receive_until(
    listener: NotifyListener, done: Callable[[list[Message]], bool], timeout_s: float = 30.0
) -> list[Message]:
    """Every message until ``done(messages)`` holds (fails after the deadline)."""
    messages: list[Message] = []

    def probe() -> list[Message]:
        message = listener.receive(0.2)
        if message is not None:
            messages.append(message)
        return messages

    return poll_until_sync(
        probe, until=done, timeout_s=timeout_s, interval_s=0, what="notify messages"
    )


def pending(listener: NotifyListener) -> list[Message]:
    """The messages already queued, without waiting."""
    messages = []
    while (message := listener.receive(0)) is not None:
        messages.append(message)
    return messages


def from_pid(pid: int, key: str, value: str | None = None) -> Callable[[list[Message]], bool]:
    def found(messages: list[Message]) -> bool:
        return any(
            m.get("MAINPID", str(pid)) == str(pid)
            and key in m
            and (value is None or value in m[key])
            for m in messages
        )

    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_coordinator_reports_ready_with_its_status_then_stopping(
    listener: NotifyListener, spawn: Spawn, tmp_path: Path
) -> None:
    coordinator = spawn(
        "coordinator", "--bind", "tcp://127.0.0.1:0", "--state-dir", str(tmp_path / "c")
    )
    messages = receive_until(listener, lambda ms: any(m.get("READY") == "1" for m in ms))
    ready = messages[-1]
    assert ready["MAINPID"] == str(coordinator.pid)
    endpoint = ready["MESH_ENDPOINT"]
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
    assert ready["STATUS"] == f"listening on {endpoint}"

    coordinator.send_signal(signal.SIGTERM)
    assert coordinator.wait(timeout=20) == 0
    after = pending(listener)
    assert {"STOPPING": "1"} in after
    # No watchdog without WATCHDOG_USEC.
    assert not any("WATCHDOG" in m for m in messages + after)


def test_a_node_started_before_its_coordinator_waits_then_reports_ready_and_slots(
    listener: NotifyListener, spawn: Spawn, tmp_path: Path
) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    node = spawn(
        "node",
        "--coordinator",
        address,
        "--slots",
        "2",
        "--node-id",
        "n1",
        "--state-dir",
        str(tmp_path / "n1"),
    )
    waiting = f"waiting for the coordinator at {address}"
    first = receive_until(listener, lambda ms: bool(ms))[0]
    assert first == {"STATUS": waiting, "EXTEND_TIMEOUT_USEC": str(EXTEND_TIMEOUT_USEC)}
    # The node has tried to register, and timed out, at least once: still not ready.
    log = tmp_path / "node-0.log"
    poll_until_sync(
        lambda: f"waiting for the coordinator at {address}" in log.read_text(),
        timeout_s=30,
        what="the node's first registration to time out",
    )
    assert not any("READY" in m for m in pending(listener))
    assert node.poll() is None

    spawn("coordinator", "--bind", address, "--state-dir", str(tmp_path / "c"))
    messages = receive_until(listener, from_pid(node.pid, "READY"))
    ready = next(m for m in messages if m.get("MAINPID") == str(node.pid))
    assert ready["MESH_NODE_ID"] == "n1"
    assert ready["STATUS"] == f"registered with the coordinator at {address}, 2 slots, 0 busy"

    # A job on one slot: the status line follows.
    job_file = write_job(tmp_path, ENDLESS)

    async def submit() -> None:
        async with open_client(address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))

    anyio.run(submit)
    receive_until(listener, lambda ms: any(m.get("STATUS", "").endswith("1 busy") for m in ms))


def test_watchdog_pings_at_half_the_interval(
    listener: NotifyListener, spawn: Spawn, tmp_path: Path
) -> None:
    # WATCHDOG_USEC of 0.4 s: a ping every 0.2 s.
    coordinator = spawn(
        "coordinator",
        "--bind",
        "tcp://127.0.0.1:0",
        "--state-dir",
        str(tmp_path / "c"),
        env={"WATCHDOG_USEC": "400000"},
    )
    receive_until(listener, lambda ms: any(m.get("READY") == "1" for m in ms))
    window_s = 2.0
    started = time.monotonic()
    pings = receive_until(
        listener, lambda _: time.monotonic() - started >= window_s, timeout_s=window_s + 5
    )
    count = sum(m == {"WATCHDOG": "1"} for m in pings)
    assert 5 <= count <= 15, f"{count} pings in {window_s} s, expected about 10"
    assert coordinator.poll() is None


def test_watchdog_variables_for_another_process_are_ignored(
    listener: NotifyListener, spawn: Spawn, tmp_path: Path
) -> None:
    coordinator = spawn(
        "coordinator",
        "--bind",
        "tcp://127.0.0.1:0",
        "--state-dir",
        str(tmp_path / "c"),
        env={"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"},
    )
    messages = receive_until(listener, lambda ms: any(m.get("READY") == "1" for m in ms))
    coordinator.send_signal(signal.SIGTERM)
    assert coordinator.wait(timeout=20) == 0
    assert not any("WATCHDOG" in m for m in messages + pending(listener))


def test_coordinator_stopped_with_sigterm_exits_0_and_keeps_its_jobs(
    local_cluster, tmp_path: Path
) -> None:
    cluster = local_cluster(nodes=1, slots=1)
    job_file = write_job(tmp_path, ENDLESS)

    async def submit() -> str:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            return job_id

    job_id = anyio.run(submit)
    coordinator = cluster.coordinator
    assert coordinator is not None
    sent = time.monotonic()
    cluster.kill(coordinator, signal.SIGTERM)
    # The bound: the daemon's graceful stop (15 s) and then some.
    with contextlib.suppress(subprocess.TimeoutExpired):
        coordinator.process.wait(timeout=20)
    assert coordinator.process.returncode == 0, coordinator.log_tail()
    print(f"coordinator exited 0 {time.monotonic() - sent:.2f} s after SIGTERM")

    cluster.restart_coordinator()

    async def listed() -> dict[str, str]:
        async with open_client(cluster.address) as client:
            jobs = {job["job_id"]: job["state"] for job in await client.list_jobs()}
            await wait_for_state(client, job_id, ("RUNNING",))
            return jobs

    assert job_id in anyio.run(listed)


_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _deny_write_execute() -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def test_daemons_run_a_job_without_writable_executable_memory(
    listener: NotifyListener, spawn: Spawn, tmp_path: Path
) -> None:
    """What the units' MemoryDenyWriteExecute=yes asks, by the kernel's own switch
    (PR_SET_MDWE, Linux 6.3): the daemons start, and a job runs."""
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_deny_write_execute, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"this kernel cannot deny writable executable memory: {exc}")
    coordinator = spawn(
        "coordinator",
        "--bind",
        "tcp://127.0.0.1:0",
        "--state-dir",
        str(tmp_path / "c"),
        preexec_fn=_deny_write_execute,
    )
    ready = receive_until(listener, from_pid(coordinator.pid, "READY"))[-1]
    address = ready["MESH_ENDPOINT"]
    node = spawn(
        "node",
        "--coordinator",
        address,
        "--state-dir",
        str(tmp_path / "n"),
        preexec_fn=_deny_write_execute,
    )
    receive_until(listener, from_pid(node.pid, "READY"))
    job_file = write_job(tmp_path, ENDLESS)

    async def submit() -> None:
        async with open_client(address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))

    anyio.run(submit)
