"""Helpers for tests that run jobs on real daemons."""

from __future__ import annotations

import inspect
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from mesh.client.client import open_client, prepare_submission
from mesh.protocol.states import FINAL_JOB_STATES

FINAL_STATES = FINAL_JOB_STATES

T = TypeVar("T")


def _timed_out(what: str, timeout_s: float, last: str) -> AssertionError:
    if len(last) > 2000:
        last = last[:2000] + "..."
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last value: {last}")


async def poll_until(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout_s: float,
    interval_s: float = 0.05,
    what: str,
    until: Callable[[T], object] = bool,
    show: Callable[[T], str] = repr,
) -> T:
    """Call ``probe`` (sync or async) every ``interval_s`` until its value is truthy (or
    ``until(value)`` holds) and return that value; after ``timeout_s`` fail with an
    ``AssertionError`` naming ``what`` and the last value seen (as ``show`` renders it).

    This is how a test waits for something that happens in another process or daemon
    (a job state, a checkpoint, a node registering) with nothing local to wait on. The
    probe may raise to stop waiting at once (say, a job that ended while waiting for
    RUNNING); what it raises, a ``TimeoutError`` included, propagates unchanged.
    """
    last = "nothing (the probe never returned)"
    with anyio.move_on_after(timeout_s):
        while True:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if until(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
            last = show(value)  # type: ignore[arg-type]
            await anyio.sleep(interval_s)
    raise _timed_out(what, timeout_s, last)


def poll_until_sync(
    probe: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    what: str,
    until: Callable[[T], object] = bool,
    show: Callable[[T], str] = repr,
) -> T:
    """The twin of :func:`poll_until` for sync tests (a deadline on ``time.monotonic``).

    The probe runs at least once, and once more after the deadline if the previous call
    started before it. A probe that blocks by itself (``select`` with a timeout) may pass
    ``interval_s=0``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, show(value))
        time.sleep(interval_s)


def status_summary(status: dict[str, Any]) -> str:
    """A job status in one line: state, attempt, error (for timeout messages)."""
    if not status:
        return repr(status)
    return (
        f"state={status.get('state')} attempt={status.get('attempt')} error={status.get('error')}"
    )


def write_job(directory: Path, source: str, name: str = "job.py") -> Path:
    """Write a job file (dedented) and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


async def wait_for_state(
    client: Any, job_id: str, states: tuple[str, ...], *, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Poll the job's status until it is in one of ``states`` (fails after the deadline)."""

    def reached(status: dict[str, Any]) -> bool:
        if status["state"] in states:
            return True
        if status["state"] in FINAL_STATES:
            raise AssertionError(
                f"job ended {status['state']} while waiting for {states}: {status['error']}"
            )
        return False

    return await poll_until(
        lambda: client.status(job_id),
        until=reached,
        timeout_s=timeout_s,
        what=f"job {job_id} in one of {states}",
        show=status_summary,
    )


async def run_job(
    address: str,
    job_file: Path,
    *,
    parallelism: int | None = None,
    base_dir: Path | None = None,
    timeout_s: float = 60.0,
    keys: Path | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Submit a job, wait until it ends; returns (final status, collected records).
    ``keys``: the client's keys directory, for a cluster that uses CURVE."""
    submission = prepare_submission(job_file, parallelism=parallelism, base_dir=base_dir)
    async with open_client(address, keys=keys) as client:
        job_id = await client.submit(submission)
        status = await wait_for_state(client, job_id, FINAL_STATES, timeout_s=timeout_s)
        collected: list[Any] = []
        offset = 0
        while True:
            records, offset, complete = await client.fetch_collected(job_id, offset)
            collected.extend(records)
            if complete:
                break
    return status, collected


def read_parts(directory: Path) -> list[Any]:
    """Every record in committed part files of a JsonLines sink directory."""
    import orjson

    records = []
    for path in sorted(directory.glob("part-*.jsonl")):
        records.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    return records
