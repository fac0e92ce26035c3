"""``mesh run``'s client side: submit a job, show its progress, print its results.

Ctrl-C (or SIGTERM) stops the job with a savepoint whose path is printed last.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from mesh.client.client import open_client
from mesh.client.progress import progress_of
from mesh.errors import RemoteError, TransportError
from mesh.protocol.states import FINAL_JOB_STATES, JobState
from mesh.time.durations import format_duration

if TYPE_CHECKING:
    from mesh.client.live import ProgressDisplay

__all__ = ["Outcome", "drive_job"]


class Outcome(Enum):
    """How a driven job ended, as far as the person running it is concerned."""

    OK = "ok"  # finished
    FAILED = "failed"  # failed, or could not be submitted
    INTERRUPTED = "interrupted"  # cancelled, or stopped by a signal


def _now_ms() -> int:
    return int(time.time() * 1000)


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


async def drive_job(
    address: str, submission: Any, *, quiet: bool, state_dir: str, keys: Path | None = None
) -> Outcome:
    """Submit, show progress, print results; returns how the run ended."""

    async with open_client(address, keys=keys) as client:
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
        display: ProgressDisplay | None = None
        if not quiet:  # rich is imported only to draw
            from mesh.client.live import ProgressDisplay

            display = ProgressDisplay(sys.stderr)
        say = _err if display is None else display.message
        st: dict[str, Any] = {}
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:

                    async def on_signal() -> None:
                        nonlocal interrupted, savepoint_path
                        async for _ in signals:
                            interrupted = True
                            say("interrupted: taking a savepoint, then stopping the job ...")
                            try:
                                savepoint_path = await client.savepoint(
                                    job_id, directory=savepoints, cancel=True
                                )
                            except (RemoteError, TimeoutError) as exc:
                                say(f"no savepoint ({exc}); cancelling the job")
                                await client.cancel(job_id)
                            return

                    job_ended = anyio.Event()

                    async def await_end() -> None:
                        # Wakes the loop below the moment the job ends; should the
                        # coordinator not answer (restarted, older), the loop still polls.
                        with contextlib.suppress(RemoteError, TimeoutError, TransportError):
                            await client.await_end(job_id)
                            job_ended.set()

                    tg.start_soon(on_signal)
                    tg.start_soon(await_end)
                    while True:
                        st = await client.status(job_id)
                        records, offset, _ = await client.fetch_collected(job_id, offset)
                        collected.extend(records)
                        if st["state"] in FINAL_JOB_STATES:
                            break
                        if display is not None:
                            display.show(progress_of(st, _now_ms()))
                        with anyio.move_on_after(0.5):
                            await job_ended.wait()
                    tg.cancel_scope.cancel()
        finally:
            if display is not None:
                ended = st.get("state") in FINAL_JOB_STATES
                display.close(progress_of(st, _now_ms()) if ended else None)
        while True:
            records, offset, complete = await client.fetch_collected(job_id, offset)
            collected.extend(records)
            if complete or not records:
                break
    for record in collected:
        sys.stdout.write(orjson.dumps(record).decode() + "\n")
    sys.stdout.flush()
    state = JobState(st["state"])
    elapsed = format_duration(st["uptime_ms"])
    totals = st["totals"]
    average = progress_of(st, _now_ms()).in_rate
    _err(
        f"job {job_id} ({st['name']}) {state} after {elapsed}: "
        f"{totals['records_in']:,} records in, {totals['records_out']:,} out "
        f"({average:,.0f} records/s in on average)"
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
        elif sink.get("type") == "Kafka":
            committed = (
                " (read it with isolation.level=read_committed)"
                if sink.get("semantic") == "exactly_once"
                else ""
            )
            _err(f"results: Kafka topic {sink['topic']} at {sink['bootstrap']}{committed}")
    if state is JobState.FAILED:
        _err(f"\n{st.get('error') or 'the job failed'}")
        return Outcome.FAILED
    if savepoint_path is not None:
        _err(f"savepoint (resume with --from-savepoint):\n{savepoint_path}")
    if interrupted or state is JobState.CANCELED:
        return Outcome.INTERRUPTED
    return Outcome.OK
