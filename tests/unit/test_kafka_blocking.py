"""The helpers that keep Kafka client calls from holding up a subtask or the process:
real threads, blocked on events the tests release."""

from __future__ import annotations

import logging
import threading
import time

import anyio
import pytest

from mesh.connectors.kafka.blocking import call_bounded, close_clients


@pytest.mark.asyncio
async def test_call_bounded_returns_the_result_or_raises_what_the_call_raised() -> None:
    assert await call_bounded(lambda a, b: a + b, 2, 3, limit_s=5, name="add") == 5

    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await call_bounded(fail, limit_s=5, name="fail")


@pytest.mark.asyncio
async def test_call_bounded_leaves_a_stuck_call_behind_after_its_limit() -> None:
    release = threading.Event()
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"stuck did not return within 0\.2 s"):
        await call_bounded(release.wait, limit_s=0.2, name="stuck")
    assert time.monotonic() - began < 2.0
    stuck = [t for t in threading.enumerate() if t.name == "stuck"]
    assert len(stuck) == 1 and stuck[0].daemon  # never keeps the process from exiting
    release.set()
    # It ends once it handed its result back: to this loop, which must not be blocked.
    await anyio.to_thread.run_sync(stuck[0].join, 5)
    assert not stuck[0].is_alive()


@pytest.mark.asyncio
async def test_a_cancelled_caller_returns_at_once() -> None:
    release = threading.Event()
    with anyio.move_on_after(0.1) as scope:
        await call_bounded(release.wait, limit_s=60, name="cancelled")
    assert scope.cancelled_caught
    release.set()


class _Client:
    def __init__(self, blocks: threading.Event | None = None) -> None:
        self.closed = threading.Event()
        self._blocks = blocks

    def close(self) -> None:
        if self._blocks is not None:
            self._blocks.wait(30)
        self.closed.set()


def test_close_clients_waits_a_little_then_leaves_the_stuck_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    quick, stuck = _Client(), _Client(blocks=release)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mesh.connectors.kafka"):
        close_clients([quick, stuck], wait_s=0.3)
    assert time.monotonic() - began < 2.0
    assert quick.closed.is_set() and not stuck.closed.is_set()
    assert "1 Kafka client(s) did not close within 0.3 s" in caplog.text
    release.set()
    assert stuck.closed.wait(5)
