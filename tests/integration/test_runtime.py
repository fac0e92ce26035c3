"""Runtime behaviour on real daemons: code shipping, buffer timeouts, sinks.

Shipping a package, a Print sink's stdout and a slow outside reader (a thread) use
daemon processes; the others run on an in-process cluster."""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, read_parts, run_job, wait_for_state, write_job


def test_a_job_inside_a_package_ships_its_package(local_cluster, tmp_path: Path) -> None:
    package = tmp_path / "project" / "analytics"
    (package / "lib").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "lib" / "__init__.py").write_text("")
    (package / "lib" / "words.py").write_text("def shout(word):\n    return word.upper() + '!'\n")
    job_file = write_job(
        package,
        """
        from analytics.lib.words import shout
        from mesh import Job, sinks, sources

        job = Job("packaged", parallelism=2)
        job.source(sources.Collection(["a", "b", "c", "d"])).rebalance().map(shout).sink(
            sinks.Collect()
        )
        """,
        "job.py",
    )
    cluster = local_cluster(nodes=2, slots=1)
    # Submitted from elsewhere: the nodes can only import analytics.lib from the bundle.
    status, collected = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
    assert status["state"] == "FINISHED", status["error"]
    assert sorted(collected) == ["A!", "B!", "C!", "D!"]


@pytest.mark.asyncio
async def test_partly_filled_buffers_leave_after_the_buffer_timeout(
    inprocess_cluster, tmp_path: Path
) -> None:
    # 20 records/s would take almost a minute to fill one 1024-record buffer.
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("trickle", parallelism=1, buffer_timeout="20ms")
        job.source(sources.Generator(lambda i: i, rate=20)).rebalance().map(
            lambda i: i * 10
        ).set_parallelism(2).sink(sinks.Collect())
        """,
    )
    cluster = inprocess_cluster(nodes=2, slots=2)

    async def scenario() -> list[int]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            seen: list[int] = []
            offset = 0

            async def fetch() -> int:
                nonlocal offset
                records, offset, _ = await client.fetch_collected(job_id, offset)
                seen.extend(records)
                return len(seen)

            await poll_until(
                fetch, until=lambda n: n >= 5, timeout_s=10, what="5 collected records"
            )
            await client.cancel(job_id)
            return seen

    async with cluster:
        seen = await scenario()
    assert set(seen) <= {i * 10 for i in range(1000)} and len(seen) >= 5


def test_print_sink_writes_to_the_node_stdout(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("printer", parallelism=2)
        job.source(sources.Collection([{"n": i} for i in range(6)])).sink(sinks.Print())
        """,
    )
    out = tmp_path / "stdout.txt"
    with open(out, "wb") as stdout:
        cluster = local_cluster(nodes=1, slots=2, stdout=stdout)
        status, _ = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
    assert status["state"] == "FINISHED", status["error"]
    lines = sorted(out.read_text().splitlines())
    assert len(lines) == 6
    for line in lines:
        prefix, _, record = line.partition("> ")
        assert prefix in {"1", "2"}
        assert orjson.loads(record)["n"] in range(6)


@pytest.mark.asyncio
async def test_json_lines_sink_files_are_complete_and_hidden_until_done(
    inprocess_cluster, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    events = [{"id": i, "text": f"line {i}"} for i in range(5000)]
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events[:2500]))
    (tmp_path / "in" / "b.jsonl").write_bytes(
        b"\n\n".join(orjson.dumps(e) for e in events[2500:]) + b"\n"
    )
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("copy", parallelism=3)
        job.source(sources.JsonLines("in/*.jsonl")).sink(sinks.JsonLines("out"))
        """,
    )
    async with inprocess_cluster(nodes=2, slots=2) as cluster:
        status, _ = await run_job(cluster.address, job_file, base_dir=tmp_path)
    assert status["state"] == "FINISHED", status["error"]
    assert sorted(read_parts(tmp_path / "out"), key=lambda e: e["id"]) == events
    assert len(list((tmp_path / "out").glob("part-*.jsonl"))) == 3
    assert not list((tmp_path / "out").glob(".*inprogress"))


def test_zmq_push_sink_delivers_everything_to_a_slow_reader(local_cluster, tmp_path: Path) -> None:
    import threading
    import time

    import zmq

    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 5)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    received: list[bytes] = []
    done = threading.Event()
    got_all = threading.Event()

    def read_slowly() -> None:
        while not done.is_set():
            if pull.poll(100):
                received.append(pull.recv())
                if len(received) == 3000:
                    got_all.set()
                time.sleep(0.0002)  # a slow outside consumer, not a wait for an event

    reader = threading.Thread(target=read_slowly)
    reader.start()
    job_file = write_job(
        tmp_path,
        f"""
        from mesh import Job, sinks, sources

        job = Job("push", parallelism=1)
        job.source(sources.Collection([{{"i": i, "pad": "x" * 4000}} for i in range(3000)])).sink(
            sinks.ZmqPush("tcp://127.0.0.1:{port}", high_water_mark=10)
        )
        """,
    )
    cluster = local_cluster(nodes=1, slots=1)
    try:
        status, _ = anyio.run(lambda: run_job(cluster.address, job_file, base_dir=tmp_path))
        finished_with = len(received)
        got_all.wait(timeout=30)
    finally:
        done.set()
        reader.join()
        pull.close()
        context.term()
    assert status["state"] == "FINISHED", status["error"]
    assert finished_with < 3000  # the job ended while messages were still on their way
    assert sorted(orjson.loads(m)["i"] for m in received) == list(range(3000))
