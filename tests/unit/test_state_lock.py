"""One daemon per state directory (mesh/state/lock.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.errors import StateError
from mesh.state.lock import LOCK_FILE, StateDirLock, StateDirLocked, holder_pid


def test_the_lock_names_its_holder_and_refuses_a_second_taker(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    with StateDirLock.acquire(directory, "coordinator"):
        assert holder_pid((directory / LOCK_FILE).read_text()) == os.getpid()
        with pytest.raises(StateDirLocked, match=rf"in use by .*\(pid {os.getpid()}\)") as info:
            StateDirLock.acquire(directory, "coordinator")
        assert info.value.holder == os.getpid()
        assert "another --state-dir" in str(info.value)


def test_a_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    lock = StateDirLock.acquire(tmp_path, "node")
    lock.release()
    lock.release()  # idempotent
    with StateDirLock.acquire(tmp_path, "node"):
        pass


def test_a_stale_pid_in_an_unlocked_file_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("999999999\n")
    with StateDirLock.acquire(tmp_path, "node"):
        assert holder_pid((tmp_path / LOCK_FILE).read_text()) == os.getpid()


def test_a_state_dir_that_is_a_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match="cannot lock state directory"):
        StateDirLock.acquire(tmp_path / "file", "node")


@pytest.mark.parametrize(
    ("text", "pid"),
    [("123\n", 123), ("  42  ", 42), ("", None), ("abc", None), ("0", None), ("-5", None)],
)
def test_holder_pid(text: str, pid: int | None) -> None:
    assert holder_pid(text) == pid
