"""``mesh status --json`` keeps the shape docs/status.schema.json documents.

Three jobs on an in-process cluster cover the schema's branches: one that finishes with
checkpoints (a latest checkpoint), one whose user code raises (an error and a failure),
and one held back by a sink whose destination never reads (a bottleneck, which the text
status names). Each status is read with ``mesh status JOB
--json`` as a user runs it and checked against the schema file the docs hold; the
docs page must list every field of that schema.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import zmq

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job
from tests.jsonshape import documented_paths, problems

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "status.schema.json").read_text())
DOC = (ROOT / "docs" / "status-json.md").read_text()

FINISHES = """
    from mesh import Job, sinks, sources

    job = Job("finishes", parallelism=2, checkpoint_interval="50ms")
    (
        job.source(sources.Collection(list(range(200)))).uid("numbers")
        .map(lambda x: {"k": x % 5, "x": x}).key_by(lambda r: r["k"]).sum("x").uid("sums")
        .sink(sinks.JsonLines("out/sums")).uid("out")
    )
"""

FAILS = """
    from mesh import Job, sinks, sources

    job = Job("fails")
    job.source(sources.Collection([1, 0])).map(lambda x: 1 / x).sink(sinks.Collect())
"""

STALLS = """
    from mesh import Job, sinks, sources

    job = Job("stalls", parallelism=1, buffer_timeout="5ms")
    (
        job.source(sources.Generator(lambda i: {{"i": i, "pad": "x" * 200}})).name("numbers")
        .rebalance()
        .map(lambda r: r).name("forward")
        .sink(sinks.ZmqPush("{endpoint}", high_water_mark=10))
    )
"""


async def mesh_cli(*args: str) -> str:
    """``python -m mesh ARGS`` as a user runs it; its stdout (exit code 0)."""
    env = {k: v for k, v in os.environ.items() if k != "MESH_COORDINATOR"}
    result = await anyio.run_process([sys.executable, "-m", "mesh", *args], check=False, env=env)
    assert result.returncode == 0, (args, result.returncode, result.stderr.decode())
    return result.stdout.decode()


def ratios(status: dict[str, Any]) -> str:
    subtasks = [s for task in status["tasks"] for s in task["subtasks"]]
    return repr([(s["subtask"], s["state"], s["backpressure_ratio"]) for s in subtasks])


def assert_fits_schema(status: dict[str, Any]) -> None:
    found = problems(status, SCHEMA)
    assert not found, "mesh status --json does not fit docs/status.schema.json:\n" + "\n".join(
        found
    )


def test_the_doc_lists_every_field_of_the_schema() -> None:
    listed = set(re.findall(r"^\| `([^`]+)` \|", DOC, re.MULTILINE))
    paths = {path for path, _ in documented_paths(SCHEMA)}
    assert paths - listed == set(), "fields in the schema but not in docs/status-json.md"
    assert listed - paths == set(), "fields in docs/status-json.md but not in the schema"
    undescribed = [path for path, sub in documented_paths(SCHEMA) if not sub.get("description")]
    assert undescribed == []


def test_the_checker_catches_what_it_should() -> None:
    schema = {
        "type": "object",
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": ["string", "null"], "enum": ["x", None]},
        },
        "additionalProperties": False,
    }
    assert problems({"a": 1, "b": None}, schema) == []
    assert problems({"a": True, "b": "y", "c": 0}, schema) == [
        "$.a: expected integer, got bool True",
        "$.b: 'y' is not one of ['x', None]",
        "$: unexpected key 'c' (not in the schema)",
    ]
    assert problems({"a": 1.5}, schema) == [
        "$: missing key 'b'",
        "$.a: expected integer, got float 1.5",
    ]
    with pytest.raises(ValueError, match="keywords this checker lacks"):
        problems({}, {"type": "object", "oneOf": []})


@pytest.mark.asyncio
async def test_status_json_fits_the_documented_schema(inprocess_cluster, tmp_path: Path) -> None:
    context = zmq.Context()
    never_read = context.socket(zmq.PULL)  # the stalled job's sink pushes here; no one reads
    never_read.setsockopt(zmq.RCVHWM, 10)
    never_read.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{never_read.bind_to_random_port('tcp://127.0.0.1')}"
    try:
        async with inprocess_cluster(nodes=2, slots=3, heartbeat_interval_ms=100) as cluster:
            address = cluster.address
            async with open_client(address) as client:
                jobs = {}
                for name, source in [("finishes", FINISHES), ("fails", FAILS)]:
                    job_file = write_job(tmp_path, source, f"{name}.py")
                    jobs[name] = await client.submit(
                        prepare_submission(job_file, base_dir=tmp_path)
                    )
                stalls = write_job(tmp_path, STALLS.format(endpoint=endpoint), "stalls.py")
                stalled = await client.submit(prepare_submission(stalls, base_dir=tmp_path))
                await wait_for_state(client, jobs["finishes"], ("FINISHED",))
                await wait_for_state(client, jobs["fails"], ("FAILED",))
                await poll_until(
                    lambda: client.status(stalled),
                    until=lambda status: status["bottleneck"] is not None,
                    timeout_s=30,
                    what="the stalled job's bottleneck",
                    show=ratios,
                )

                finished, failed, running = [
                    orjson.loads(
                        await mesh_cli("status", job_id, "--json", "--coordinator", address)
                    )
                    for job_id in (jobs["finishes"], jobs["fails"], stalled)
                ]
                text = await mesh_cli("status", stalled, "--coordinator", address)
                await client.cancel(stalled)
                await wait_for_state(client, stalled, ("CANCELED",))
    finally:
        never_read.close()
        context.term()

    for status in (finished, failed, running):
        assert_fits_schema(status)
    # The branches the schema allows were all exercised.
    assert finished["checkpoints"]["latest"]["state"] == "COMPLETED"
    assert finished["bottleneck"] is None and finished["sinks"][0]["directory"] == "out/sums"
    assert failed["error"] and "ZeroDivisionError" in failed["failures"][-1]["error"]
    assert running["state"] == "RUNNING" and running["checkpoints"]["interval_ms"] is None
    bottleneck = running["bottleneck"]  # the sink waits for a socket no one reads
    assert bottleneck["name"] == "forward -> Sink: ZmqPush" and bottleneck["subtask"] == "1.0"
    assert bottleneck["upstream"] is None and bottleneck["backpressure_ratio"] >= 0.5
    line = next(line for line in text.splitlines() if line.startswith("backpressure:"))
    assert line.startswith(
        f"backpressure: likely bottleneck forward -> Sink: ZmqPush [0] (subtask 1.0) on node "
        f"{bottleneck['node']} — it ends the pipeline and waits "
    )
    assert line.endswith(
        "of the time for its sink's destination: what it writes to is not keeping up"
    )
