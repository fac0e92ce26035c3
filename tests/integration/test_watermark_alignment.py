"""Watermark alignment on real daemons: a source far ahead in event time waits for the
slow one of its group (and the same job without alignment shows that it would not),
nothing is lost or reordered within a source, and the fast source goes on alone once
the slow one ends or goes idle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import zmq

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, run_job, wait_for_state, write_job

DRIFT_MS = 20_000
SLOW_N, SLOW_STEP = 3000, 10  # 30 s of event time, read at 1000 records/s (10 s per s)
FAST_N, FAST_STEP = 12000, 10  # 120 s of event time, read as fast as it goes
# While the slow source runs, the fast one may read up to the slow one's last timestamp
# plus the drift; only those fast records show whether it waited.
GATED = (SLOW_N - 1) * SLOW_STEP + DRIFT_MS

JOB = """
    from mesh import Job, ProcessFunction, WatermarkStrategy, sinks, sources

    ALIGN = {align!r}

    def strategy(idle=None):
        if ALIGN:
            return WatermarkStrategy.bounded(
                0, timestamp=lambda e: e["ts"], idle_timeout=idle,
                align_group="g", max_drift="{drift}ms",
            )
        return WatermarkStrategy.bounded(0, timestamp=lambda e: e["ts"], idle_timeout=idle)

    class Lead(ProcessFunction):
        # How far ahead of the slow source's newest record each fast record arrives.
        def open(self, ctx):
            self.slow = 0

        def process(self, event, ctx):
            if event["src"] == "slow":
                self.slow = event["ts"]
                yield {{"src": "slow", "ts": event["ts"]}}
            else:
                yield {{"src": "fast", "ts": event["ts"], "lead": event["ts"] - self.slow}}

    job = Job("aligned", parallelism=1)
    {slow}
    fast = job.source(
        sources.Generator(
            lambda i: {{"src": "fast", "ts": i * {fast_step}}},
            count={fast_n},
        ),
        watermarks=strategy(),
    )
    slow.union(fast).process(Lead()).sink(sinks.Collect())
"""

SLOW_GENERATOR = f"""slow = job.source(
        sources.Generator(
            lambda i: {{"src": "slow", "ts": i * {SLOW_STEP}}},
            count={SLOW_N},
            rate=1000,
        ),
        watermarks=strategy(),
    )"""

SLOW_SILENT = """slow = job.source(sources.ZmqPull({endpoint!r}), watermarks=strategy("300ms"))"""


def _job(tmp_path: Path, *, align: bool, slow: str, name: str) -> Path:
    return write_job(
        tmp_path,
        JOB.format(align=align, drift=DRIFT_MS, slow=slow, fast_step=FAST_STEP, fast_n=FAST_N),
        name,
    )


def _check_complete(records: list[dict[str, Any]]) -> None:
    for src, n, step in (("slow", SLOW_N, SLOW_STEP), ("fast", FAST_N, FAST_STEP)):
        stamps = [r["ts"] for r in records if r["src"] == src]
        assert stamps == [i * step for i in range(n)], f"{src}: lost or reordered"


@pytest.mark.parametrize("align", [True, False])
def test_a_fast_source_waits_for_the_slow_one(local_cluster, tmp_path: Path, align: bool) -> None:
    job_file = _job(tmp_path, align=align, slow=SLOW_GENERATOR, name=f"align-{align}.py")
    cluster = local_cluster(nodes=2, slots=2)
    final, records = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
    assert final["state"] == "FINISHED", final["error"]
    _check_complete(records)
    leads = [r["lead"] for r in records if r["src"] == "fast" and r["ts"] <= GATED]
    print(f"aligned={align}: the fast source led by at most {max(leads)} ms")
    if align:
        # The drift, plus one read of the fast source (up to 1024 records: 10 s) and the
        # slow records still on their way to the observer (a few hundred ms on a busy
        # machine: up to some 4 s of the slow source's event time).
        assert max(leads) <= DRIFT_MS + 15_000, max(leads)
    else:
        assert max(leads) > 2 * DRIFT_MS, max(leads)  # the check above can fail


def test_an_idle_slow_source_holds_nobody_back(local_cluster, tmp_path: Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    try:
        slow = SLOW_SILENT.format(endpoint=f"tcp://127.0.0.1:{port}")
        job_file = _job(tmp_path, align=True, slow=slow, name="idle.py")
        cluster = local_cluster(nodes=2, slots=2)

        async def scenario() -> dict[str, Any]:
            async with open_client(cluster.address) as client:
                submission = prepare_submission(job_file, base_dir=tmp_path)
                job_id = await client.submit(submission)
                await wait_for_state(client, job_id, ("RUNNING",))

                def sink_in(status: dict[str, Any]) -> int:
                    return int(status["tasks"][-1]["subtasks"][0]["records_in"])

                # The silent source goes idle after 300 ms: the fast one reads all of it.
                status = await poll_until(
                    lambda: client.status(job_id),
                    until=lambda s: sink_in(s) >= FAST_N,
                    timeout_s=60,
                    what="every fast record to reach the sink",
                )
                await client.cancel(job_id)
                return status

        status = anyio.run(scenario)
    finally:
        push.close()
        context.term()
    assert status["state"] == "RUNNING" and status["restarts"] == 0
