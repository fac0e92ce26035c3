"""Bad input on real daemons: each gets a clear error that names the thing at fault.

Most run on an in-process cluster; a job file that differs per process and user code
calling ``exit`` need daemons in processes of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import run_job, wait_for_state, write_job


@pytest.mark.asyncio
async def test_user_function_raising_fails_the_job_with_operator_and_record(
    inprocess_cluster, tmp_path: Path
) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        def explode(x):
            if x == 1234:
                raise ValueError("cannot handle 1234")
            return x

        job = Job("poison", parallelism=2)
        nums = job.source(sources.Generator(lambda i: i, count=5000))
        nums.key_by(lambda x: x % 7).map(explode).uid("exploder").sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=2, slots=2) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path)

        assert status["state"] == "FAILED"
        error = status["error"]
        assert "'exploder'" in error and "1234" in error
        assert "ValueError: cannot handle 1234" in error and "Traceback" in error

        async def free_slots() -> list[int]:
            async with open_client(cluster.address) as client:
                return [n["free"] for n in await client.nodes()]

        assert await free_slots() == [2, 2]


@pytest.mark.asyncio
async def test_unencodable_record_names_operator_and_type(
    inprocess_cluster, tmp_path: Path
) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("sets", parallelism=2)
        nums = job.source(sources.Collection(range(10)))
        nums.map(lambda x: {x}).uid("to-set").rebalance().sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=2, slots=2) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FAILED"
    assert "'to-set'" in status["error"]
    assert "record of type set" in status["error"]


@pytest.mark.asyncio
async def test_too_few_slots_waits_then_fails_with_what_is_needed_and_offered(
    inprocess_cluster, tmp_path: Path
) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("big", parallelism=5)
        job.source(sources.Collection([1, 2, 3])).sink(sinks.Collect())
        """,
    )
    cluster = inprocess_cluster(nodes=2, slots=2, slot_timeout_ms=1000)

    async def submit() -> tuple[Any, dict[str, Any], dict[str, Any]]:
        async with open_client(cluster.address) as client:
            reply = await client.submit_job(prepare_submission(job_file, base_dir=tmp_path))
            waiting = await client.status(reply.job_id)
            final = await wait_for_state(client, reply.job_id, ("FAILED",), timeout_s=30)
            return reply, waiting, final

    async with cluster:
        reply, waiting, final = await submit()
    # Accepted, waiting: the reply and the status say how many slots it needs and has.
    assert "needs 5 slot(s)" in reply.waiting and "the cluster has 4 free" in reply.waiting
    assert waiting["state"] == "SCHEDULING"
    assert waiting["slots"] == {"needed": {"default": 5}, "total": 5, "waiting": reply.waiting}
    # After the slot timeout it fails with that same explanation.
    assert final["error"] == f"cannot schedule job 'big': no slots within 1000 ms: {reply.waiting}"
    assert "node-1 offers 2 free of 2" in final["error"]
    assert "node-2 offers 2 free of 2" in final["error"]
    assert final["slots"]["waiting"] is None


def test_nondeterministic_job_file_is_refused_at_deploy(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        import os
        from mesh import Job, sinks, sources

        job = Job("flaky", parallelism=1)
        job.source(sources.Collection([1])).map(lambda x: x).name(f"pid {os.getpid()}").sink(
            sinks.Collect()
        )
        """,
    )
    cluster = local_cluster(nodes=1, slots=1)
    status, _ = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
    assert status["state"] == "FAILED"
    assert "differs from the submitted one" in status["error"]
    assert "deterministic" in status["error"]


@pytest.mark.asyncio
async def test_missing_input_file_names_the_pattern(inprocess_cluster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("nofile")
        job.source(sources.TextFile("missing/*.txt")).sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=1, slots=1) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FAILED"
    assert "no file matches 'missing/*.txt'" in status["error"]


@pytest.mark.asyncio
async def test_bad_json_line_names_file_and_offset(inprocess_cluster, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n{"a": 2}\n{oops\n{"a": 4}\n')
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("badjson")
        job.source(sources.JsonLines("in.jsonl")).sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=1, slots=1) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FAILED"
    assert "in.jsonl: the line at byte offset 18 is not valid JSON" in status["error"]


@pytest.mark.asyncio
async def test_bad_json_lines_become_dead_letters_with_file_and_offset(
    inprocess_cluster, tmp_path: Path
) -> None:
    """With dead letters on, a line a source cannot decode is set aside with where it
    was read, and the job reads on (it used to fail even then)."""
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n{"a": 2}\n{oops\n{"a": 4}\nnull,\n')
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("badjson", on_error="dead_letter", dead_letter=sinks.Collect())
        job.source(sources.JsonLines("in.jsonl")).uid("lines").sink(sinks.Collect())
        """,
    )
    async with inprocess_cluster(nodes=1, slots=2) as cluster:
        status, collected = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FINISHED", status["error"]
    good = [r for r in collected if "operator" not in r]
    dead = sorted((r for r in collected if "operator" in r), key=lambda r: r["origin"]["offset"])
    assert good == [{"a": 1}, {"a": 2}, {"a": 4}]
    path = str((tmp_path / "in.jsonl").resolve())
    assert [(d["operator"], d["record"], d["origin"]) for d in dead] == [
        ("lines", "{oops", {"file": path, "offset": 18}),
        ("lines", "null,", {"file": path, "offset": 33}),
    ]
    assert all("is not valid JSON" in d["error"] and d["subtask"] == 0 for d in dead)
    assert sum(sub["dead_letters"] for t in status["tasks"] for sub in t["subtasks"]) == 2


def test_user_code_calling_exit_fails_only_its_job(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        import sys
        from mesh import Job, sinks, sources

        job = Job("quitter", parallelism=2)
        job.source(sources.Collection(range(100))).rebalance().map(
            lambda x: sys.exit(3) if x == 42 else x
        ).uid("quitter").sink(sinks.Collect())
        """,
    )
    ok_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("fine", parallelism=2)
        job.source(sources.Collection(range(100))).rebalance().sink(sinks.Collect())
        """,
        "fine.py",
    )
    cluster = local_cluster(nodes=2, slots=2)
    status, _ = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
    assert status["state"] == "FAILED"
    assert "SystemExit: 3" in status["error"] and "'quitter'" in status["error"]
    assert all(node.alive() for node in cluster.nodes)
    fine, collected = anyio.run(lambda: run_job(cluster.address, ok_file, base_dir=tmp_path))
    assert fine["state"] == "FINISHED" and sorted(collected) == list(range(100))
