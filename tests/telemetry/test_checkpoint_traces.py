"""Checkpoint traces from real daemons, received over real OTLP/HTTP (tests/otlp.py).

Each checkpoint is one trace: the coordinator's root span, and one ``snapshot`` span
per subtask on the nodes, joined because the context rides in the trigger message and
in the barriers the subtasks forward.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job
from tests.otlp import Span, otlp_receiver

JOB = """
    from mesh import Job, sinks, sources

    job = Job("traced", parallelism=2, checkpoint_interval="200ms")
    (
        job.source(sources.Generator(lambda i: {"k": i % 7}, rate=2000)).uid("gen")
        .key_by(lambda r: r["k"]).count().uid("count")
        .sink(sinks.JsonLines("out/counts")).uid("sink")
    )
"""

# Two source subtasks, and two subtasks of the chained count -> sink task.
SUBTASKS = 4


def _complete_traces(spans: list[Span]) -> list[tuple[Span, list[Span]]]:
    """(root, snapshots) of every completed checkpoint whose snapshots all arrived."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    found = []
    for trace in by_trace.values():
        roots = [s for s in trace if s.parent_id is None]
        snapshots = [s for s in trace if s.name == "snapshot"]
        commits = [s for s in trace if s.name == "commit"]
        if (
            len(roots) == 1
            and roots[0].attributes.get("mesh.checkpoint.outcome") == "COMPLETED"
            and len(snapshots) >= SUBTASKS
            and commits
        ):
            found.append((roots[0], snapshots))
    return found


@pytest.mark.asyncio
async def test_a_checkpoint_is_one_trace_with_a_snapshot_span_per_subtask(
    local_cluster, tmp_path: Path
) -> None:
    with otlp_receiver() as receiver:
        args = ["--otlp-endpoint", receiver.endpoint]
        cluster = local_cluster(nodes=2, slots=2, coordinator_args=args, node_args=args)
        job_file = write_job(tmp_path, JOB)
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            traces = await poll_until(
                lambda: _complete_traces(receiver.snapshot()),
                timeout_s=60,
                what="a completed checkpoint's trace with every subtask's snapshot span",
                show=lambda found: f"{len(receiver.snapshot())} spans, {len(found)} complete",
            )
            await client.cancel(job_id)

    root, snapshots = traces[0]
    assert root.service == "mesh-coordinator"
    assert root.name == "checkpoint"
    assert root.attributes["mesh.job.id"] == job_id
    assert root.attributes["mesh.job.name"] == "traced"
    assert root.attributes["mesh.checkpoint.subtasks"] == SUBTASKS
    checkpoint_id = root.attributes["mesh.checkpoint.id"]
    # Exactly one snapshot per subtask, each a child of the root, from the nodes.
    assert len(snapshots) == SUBTASKS
    assert {s.parent_id for s in snapshots} == {root.span_id}
    assert {s.service for s in snapshots} == {"mesh-node"}
    assert {s.attributes["mesh.checkpoint.id"] for s in snapshots} == {checkpoint_id}
    subtasks = {(s.attributes["mesh.task"], s.attributes["mesh.subtask.index"]) for s in snapshots}
    assert len(subtasks) == SUBTASKS
    assert {index for _, index in subtasks} == {0, 1}
    assert all(s.error is None for s in snapshots)
    # Each node reports under its own instance id.
    nodes = {s.instance for s in snapshots}
    assert nodes <= {n.ready["MESH_NODE_ID"] for n in cluster.nodes} and len(nodes) == 2
    assert receiver.bad_requests == []
    # The subtasks that read channels aligned their barriers first; the sinks
    # pre-committed inside their snapshot and committed once the checkpoint completed.
    trace = [s for s in receiver.snapshot() if s.trace_id == root.trace_id]
    alignments = [s for s in trace if s.name == "alignment"]
    assert len(alignments) == SUBTASKS // 2
    assert {s.parent_id for s in alignments} == {root.span_id}
    snapshot_ids = {s.span_id for s in snapshots}
    precommits = [s for s in trace if s.name == "pre-commit"]
    assert precommits and {s.parent_id for s in precommits} <= snapshot_ids
    assert {s.attributes["mesh.operator.uid"] for s in precommits} == {"sink"}
    commits = [s for s in trace if s.name == "commit"]
    assert commits and {s.parent_id for s in commits} == {root.span_id}


RESTARTING_JOB = """
    from mesh import Job, RestartStrategy, sinks, sources

    job = Job(
        "phoenix",
        parallelism=2,
        checkpoint_interval="200ms",
        restart=RestartStrategy.fixed_delay(attempts=3, delay="100ms"),
    )
    (
        job.source(sources.Generator(lambda i: {"k": i % 7}, rate=2000)).uid("gen")
        .key_by(lambda r: r["k"]).count().uid("count")
        .sink(sinks.JsonLines("out/counts")).uid("sink")
    )
"""


def _flow(spans: list[Span], name: str) -> list[Span] | None:
    """The spans of the first trace whose root is called ``name`` and has ended."""
    roots = [s for s in spans if s.parent_id is None and s.name == name]
    if not roots:
        return None
    return [s for s in spans if s.trace_id == roots[0].trace_id]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_submission_and_a_failover_are_traces_with_their_steps_and_cause(
    local_cluster, tmp_path: Path
) -> None:
    with otlp_receiver() as receiver:
        args = ["--otlp-endpoint", receiver.endpoint]
        heartbeats = {"MESH_HEARTBEAT_INTERVAL": "200ms", "MESH_HEARTBEAT_TIMEOUT": "1s"}
        cluster = local_cluster(
            nodes=3, slots=2, coordinator_args=args, node_args=args, env=heartbeats
        )
        job_file = write_job(tmp_path, RESTARTING_JOB)
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            status = await wait_for_state(client, job_id, ("RUNNING",))
            victim_id = status["placement"][0]["node"]
            victim = next(n for n in cluster.nodes if n.ready["MESH_NODE_ID"] == victim_id)
            cluster.kill(victim)
            await poll_until(
                lambda: client.status(job_id),
                until=lambda st: st["state"] == "RUNNING" and st["attempt"] == 1,
                timeout_s=60,
                what="the job running again as attempt 1",
            )
            failover = await poll_until(
                lambda: _flow(receiver.snapshot(), "failover"),
                timeout_s=30,
                what="the failover's trace",
            )
            submit = _flow(receiver.snapshot(), "submit")
            await client.cancel(job_id)

    def steps(spans: list[Span]) -> tuple[Span, list[str]]:
        (root,) = [s for s in spans if s.parent_id is None]
        children = sorted(
            (s for s in spans if s.parent_id == root.span_id), key=lambda s: s.start_ns
        )
        return root, [s.name for s in children]

    assert submit is not None
    root, names = steps(submit)
    assert root.service == "mesh-coordinator" and root.attributes["mesh.job.id"] == job_id
    assert names == ["schedule", "deploy"] and root.error is None

    root, names = steps(failover)
    assert names == ["cancel", "restore", "deploy"]
    cause = root.attributes["mesh.failover.cause"]
    assert f"node {victim_id}" in cause and "lost" in cause
    assert root.attributes["mesh.job.attempt"] == 1 and root.error is None


BOUNDED_JOB = """
    from mesh import Job, sinks, sources

    job = Job("bounded", parallelism=2, checkpoint_interval="100ms")
    job.source(sources.Collection(list(range(100)))).map(lambda i: {"i": i}).sink(
        sinks.JsonLines("out/bounded")
    )
"""


def test_mesh_run_exports_the_traces_of_its_daemons(tmp_path: Path) -> None:
    """``mesh run --otlp-endpoint``: the final checkpoint of a bounded job is one trace
    from the embedded coordinator and nodes, flushed before ``mesh run`` returns."""
    job_file = write_job(tmp_path, BOUNDED_JOB)
    with otlp_receiver() as receiver:
        run = subprocess.run(
            [
                *(sys.executable, "-m", "mesh", "run", str(job_file), "-q", "--nodes", "2"),
                *("--otlp-endpoint", receiver.endpoint),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        spans = receiver.snapshot()
    assert run.returncode == 0, run.stderr
    checkpoints = [s for s in spans if s.name == "checkpoint" and s.parent_id is None]
    assert checkpoints, f"no checkpoint trace among {[s.name for s in spans]}"
    traced = {s.trace_id for s in checkpoints}
    snapshots = [s for s in spans if s.name == "snapshot" and s.trace_id in traced]
    assert {s.service for s in snapshots} == {"mesh-node"}
    assert {s.service for s in checkpoints} == {"mesh-coordinator"}
    assert any(s.name == "submit" and s.parent_id is None for s in spans)


@pytest.mark.asyncio
async def test_daemons_log_one_json_object_per_line_when_asked(
    local_cluster, tmp_path: Path
) -> None:
    args = ["--log-format", "json"]
    cluster = local_cluster(nodes=1, slots=2, coordinator_args=args, node_args=args)
    job_file = write_job(tmp_path, BOUNDED_JOB)
    async with open_client(cluster.address) as client:
        job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
        await wait_for_state(client, job_id, ("FINISHED",))
    cluster.stop()
    logs = sorted(cluster.log_dir.glob("*.log"))
    assert {p.stem.split("-")[0] for p in logs} >= {"coordinator", "node"}
    entries = []
    for path in logs:
        for line in path.read_text().splitlines():
            entry = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "role", "logger", "message"} <= set(entry), line
            entries.append(entry)
    assert {e["role"] for e in entries} == {"coordinator", "node"}
    assert any(job_id in e["message"] and "FINISHED" in e["message"] for e in entries)


def _savepoint_trace(spans: list[Span], job_id: str) -> tuple[Span, list[Span]] | None:
    """(root, snapshots) of the savepoint of ``job_id`` once every snapshot arrived."""
    for root in spans:
        if root.parent_id is not None or root.name != "savepoint":
            continue
        if root.attributes["mesh.job.id"] == job_id:
            trace = [s for s in spans if s.trace_id == root.trace_id]
            snapshots = [s for s in trace if s.name == "snapshot"]
            if len(snapshots) >= SUBTASKS:
                return root, snapshots
    return None


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_savepoint_and_a_rescale_from_it_are_traces(local_cluster, tmp_path: Path) -> None:
    """A savepoint is a trace of its own (root ``savepoint``); a job started from it at
    another parallelism is a ``submit`` trace that says where it came from and which
    operators were rescaled."""
    with otlp_receiver() as receiver:
        args = ["--otlp-endpoint", receiver.endpoint]
        cluster = local_cluster(nodes=2, slots=3, coordinator_args=args, node_args=args)
        job_file = write_job(tmp_path, JOB)
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            path = await client.savepoint(job_id, directory=str(tmp_path / "sp"), cancel=True)
            await wait_for_state(client, job_id, ("CANCELED",))
            rescaled = prepare_submission(
                job_file, base_dir=tmp_path, parallelism=3, restore_from=path
            )
            second = await client.submit(rescaled)
            await wait_for_state(client, second, ("RUNNING",))
            savepoint = await poll_until(
                lambda: _savepoint_trace(receiver.snapshot(), job_id),
                timeout_s=30,
                what="the savepoint's trace with every subtask's snapshot",
            )
            submit = await poll_until(
                lambda: [
                    s
                    for s in receiver.snapshot()
                    if s.parent_id is None and s.name == "submit"
                    if s.attributes["mesh.job.id"] == second
                ],
                timeout_s=30,
                what="the rescaled job's submission trace",
            )
            await client.cancel(second)

    root, snapshots = savepoint
    assert root.attributes["mesh.checkpoint.kind"] == "savepoint"
    assert root.attributes["mesh.checkpoint.outcome"] == "COMPLETED"
    assert len(snapshots) == SUBTASKS
    assert {s.parent_id for s in snapshots} == {root.span_id}
    (start,) = submit
    assert start.attributes["mesh.job.restored_from"] == path
    assert start.attributes["mesh.restore.job.id"] == job_id
    assert start.attributes["mesh.restore.checkpoint.kind"] == "savepoint"
    assert start.attributes["mesh.rescaled"] is True
    assert "count: 2 -> 3" in start.attributes["mesh.rescaled.operators"]
