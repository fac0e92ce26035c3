"""Waiting for a job's end without polling (``AwaitJobEnd``): the coordinator answers the
moment the job ends, at once for one that has ended, and the client keeps answering
other requests on the same connection meanwhile."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.errors import RemoteError
from tests.helpers import wait_for_state, write_job

UNBOUNDED = """
    from mesh import Job, sinks, sources

    job = Job("forever", parallelism=1)
    job.source(sources.Generator(lambda i: i, rate=100)).sink(sinks.Collect())
"""


@pytest.mark.asyncio
async def test_await_end_answers_when_the_job_ends(inprocess_cluster, tmp_path: Path) -> None:
    job_file = write_job(tmp_path, UNBOUNDED, "forever.py")
    async with (
        inprocess_cluster(nodes=1, slots=1) as cluster,
        open_client(cluster.address) as client,
    ):
        job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
        await wait_for_state(client, job_id, ("RUNNING",))
        ended: list[dict[str, object]] = []

        async def wait() -> None:
            ended.append(await client.await_end(job_id))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                # The same connection serves other requests while one waits.
                for _ in range(3):
                    assert (await client.status(job_id))["state"] == "RUNNING"
                assert ended == []
                await client.cancel(job_id)
            # Once ended, the answer comes at once.
            again = await client.await_end(job_id)
        with pytest.raises(RemoteError, match="nobody"):
            await client.await_end("nobody")

    assert [s["state"] for s in ended] == ["CANCELED"]
    assert again["state"] == "CANCELED" and again["job_id"] == job_id
