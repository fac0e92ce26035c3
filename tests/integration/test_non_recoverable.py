"""Failures no restart can fix fail the job at once, whatever its restart strategy;
the others (what user code raises among them, even a PermissionError) still restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_job, write_job


@pytest.mark.asyncio
async def test_a_sink_that_can_never_open_fails_the_job_at_once(
    inprocess_cluster, tmp_path: Path
) -> None:
    (tmp_path / "out").write_text("a file where the sink's directory should be\n")
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        # Checkpoints on: the default restart strategy is exponential (never gives up).
        job = Job("blocked-sink", parallelism=2, checkpoint_interval="200ms")
        nums = job.source(sources.Generator(lambda i: i, count=100))
        nums.rebalance().sink(sinks.JsonLines("out")).uid("files")
        """,
    )
    async with inprocess_cluster(nodes=2, slots=2) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path, timeout_s=30)
    assert status["state"] == "FAILED"
    assert status["attempt"] == 0, status["failures"]
    assert status["restarts"] == 0
    assert "no restart can fix" in status["error"]
    assert str(tmp_path / "out") in status["error"]
    assert "GraphError" in status["error"]
    assert [f["attempt"] for f in status["failures"]] == [0]


@pytest.mark.asyncio
async def test_user_code_that_raises_once_still_restarts(inprocess_cluster, tmp_path: Path) -> None:
    marker = tmp_path / "raised-once"
    job_file = write_job(
        tmp_path,
        f"""
        from pathlib import Path
        from mesh import Job, RestartStrategy, sinks, sources

        def once(x):
            marker = Path({str(marker)!r})
            if x == 7 and not marker.exists():
                marker.write_text("")
                raise PermissionError(13, "raised from user code once")
            return x

        strategy = RestartStrategy.fixed_delay(attempts=2, delay="10ms")
        job = Job("flaky", parallelism=1, restart=strategy)
        nums = job.source(sources.Generator(lambda i: i, count=20))
        nums.map(once).sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=1, slots=2) as cluster:
        status, records = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FINISHED", status["error"]
    assert status["attempt"] == 1
    assert "raised from user code once" in status["failures"][0]["error"]
    assert set(records) == set(range(20))
