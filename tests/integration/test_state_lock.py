"""Two daemons on one state directory: the second exits 2 naming the holder's pid; a
lock left by a killed daemon is free again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.state.lock import LOCK_FILE, StateDirLock, holder_pid
from tests.helpers import poll_until_sync


def _coordinator(state_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mesh",
        "coordinator",
        "--bind",
        "tcp://127.0.0.1:0",
        "--state-dir",
        str(state_dir),
    ]


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed at teardown."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def _holds_lock(process: subprocess.Popen[bytes], state_dir: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the daemon exited with {process.returncode}")
    lock = state_dir / LOCK_FILE
    return lock.exists() and holder_pid(lock.read_text()) == process.pid


def test_a_second_coordinator_on_a_locked_state_dir_exits_2(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    state_dir = tmp_path / "coordinator"
    first = subprocess.Popen(_coordinator(state_dir), stderr=subprocess.DEVNULL)
    spawned.append(first)
    poll_until_sync(
        lambda: _holds_lock(first, state_dir), timeout_s=30, what="the first coordinator's lock"
    )

    second = subprocess.run(_coordinator(state_dir), capture_output=True, timeout=60, check=False)
    assert second.returncode == 2
    lines = second.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"pid {first.pid}" in lines[0] and str(state_dir) in lines[0]
    assert first.poll() is None  # the holder is untouched

    first.send_signal(signal.SIGKILL)
    first.wait()
    third = subprocess.Popen(_coordinator(state_dir), stderr=subprocess.DEVNULL)
    spawned.append(third)
    poll_until_sync(
        lambda: _holds_lock(third, state_dir),
        timeout_s=30,
        what="a new coordinator to take the killed one's lock",
    )


def test_a_node_on_a_locked_state_dir_exits_2(tmp_path: Path) -> None:
    state_dir = tmp_path / "node"
    with StateDirLock.acquire(state_dir, "node"):
        node = subprocess.run(
            [
                sys.executable,
                "-m",
                "mesh",
                "node",
                "--coordinator",
                "tcp://127.0.0.1:9",
                "--state-dir",
                str(state_dir),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert node.returncode == 2, node.stderr.decode()
    assert f"pid {os.getpid()}" in node.stderr.decode()
