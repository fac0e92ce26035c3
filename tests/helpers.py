"""Helpers for tests that run jobs on real daemons."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anyio

from mesh.client.client import open_client, prepare_submission
from mesh.protocol.states import FINAL_JOB_STATES

FINAL_STATES = FINAL_JOB_STATES


def write_job(directory: Path, source: str, name: str = "job.py") -> Path:
    """Write a job file (dedented) and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


async def wait_for_state(
    client: Any, job_id: str, states: tuple[str, ...], *, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Poll the job's status until it is in one of ``states`` (fails after the deadline)."""
    with anyio.fail_after(timeout_s):
        while True:
            status = await client.status(job_id)
            if status["state"] in states:
                return status
            if status["state"] in FINAL_STATES:
                raise AssertionError(
                    f"job ended {status['state']} while waiting for {states}: {status['error']}"
                )
            await anyio.sleep(0.05)


async def run_job(
    address: str,
    job_file: Path,
    *,
    parallelism: int | None = None,
    base_dir: Path | None = None,
    timeout_s: float = 60.0,
) -> tuple[dict[str, Any], list[Any]]:
    """Submit a job, wait until it ends; returns (final status, collected records)."""
    submission = prepare_submission(job_file, parallelism=parallelism, base_dir=base_dir)
    async with open_client(address) as client:
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
