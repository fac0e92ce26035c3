"""``mesh run``'s client side: submit a job, show its progress, print its results.

Ctrl-C (or SIGTERM) stops the job with a savepoint whose path is printed last.
"""

from __future__ import annotations

import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import anyio
import orjson

from mesh.client.client import open_client
from mesh.client.render import format_progress
from mesh.errors import RemoteError
from mesh.protocol.states import FINAL_JOB_STATES, JobState
from mesh.time.durations import format_duration

__all__ = ["Outcome", "drive_job"]


class Outcome(Enum):
    """How a driven job ended, as far as the person running it is concerned."""

    OK = "ok"  # finished
    FAILED = "failed"  # failed, or could not be submitted
    INTERRUPTED = "interrupted"  # cancelled, or stopped by a signal


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


async def drive_job(address: str, submission: Any, *, quiet: bool, state_dir: str) -> Outcome:
    """Submit, show progress, print results; returns how the run ended."""

    tty = sys.stderr.isatty()
    async with open_client(address) as client:
        try:
            reply = await client.submit_job(submission)
        except RemoteError as exc:
            _err(f"error: {exc}")
            return Outcome.FAILED
        job_id = reply.job_id
        if not quiet:
            _err(f"job {job_id} ({submission.job_name}) submitted")
        if reply.waiting:
            _err(f"job {job_id} waits for slots: {reply.waiting}")
        collected: list[Any] = []
        offset = 0
        interrupted = False
        savepoint_path: str | None = None
        savepoints = f"{state_dir}/savepoints"
        last_line = 0.0
        last_state = ""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def on_signal() -> None:
                    nonlocal interrupted, savepoint_path
                    async for _ in signals:
                        interrupted = True
                        _err("\ninterrupted: taking a savepoint, then stopping the job ...")
                        try:
                            savepoint_path = await client.savepoint(
                                job_id, directory=savepoints, cancel=True
                            )
                        except (RemoteError, TimeoutError) as exc:
                            _err(f"no savepoint ({exc}); cancelling the job")
                            await client.cancel(job_id)
                        return

                tg.start_soon(on_signal)
                while True:
                    st = await client.status(job_id)
                    records, offset, _ = await client.fetch_collected(job_id, offset)
                    collected.extend(records)
                    now = anyio.current_time()
                    changed = st["state"] != last_state
                    if not quiet and (tty or changed or now - last_line >= 5.0):
                        end = "" if tty else "\n"
                        _err(("\r" if tty else "") + format_progress(st) + end)
                        last_line, last_state = now, st["state"]
                    if st["state"] in FINAL_JOB_STATES:
                        break
                    await anyio.sleep(0.5)
                tg.cancel_scope.cancel()
        while True:
            records, offset, complete = await client.fetch_collected(job_id, offset)
            collected.extend(records)
            if complete or not records:
                break
    if not quiet and tty:
        _err("")
    for record in collected:
        sys.stdout.write(orjson.dumps(record).decode() + "\n")
    sys.stdout.flush()
    state = JobState(st["state"])
    elapsed = format_duration(st["uptime_ms"])
    totals = st["totals"]
    _err(
        f"job {job_id} ({st['name']}) {state} after {elapsed}: "
        f"{totals['records_in']:,} records in, {totals['records_out']:,} out"
    )
    for sink in st.get("sinks", []):
        if sink.get("type") == "JsonLines":
            directory = Path(submission.base_dir) / sink["directory"]
            parts = sorted(directory.glob(f"part-{job_id}-*.jsonl"))
            inherited = (
                " and the part files of the jobs it was restored from"
                if st.get("restored_from")
                else ""
            )
            _err(
                f"results: {directory}/ ({len(parts)} part file(s) part-{job_id}-*.jsonl"
                f"{inherited})"
            )
        elif sink.get("type") == "Collect":
            _err(f"results: {len(collected)} collected record(s) printed on stdout")
    if state is JobState.FAILED:
        _err(f"\n{st.get('error') or 'the job failed'}")
        return Outcome.FAILED
    if savepoint_path is not None:
        _err(f"savepoint (resume with --from-savepoint):\n{savepoint_path}")
    if interrupted or state is JobState.CANCELED:
        return Outcome.INTERRUPTED
    return Outcome.OK
