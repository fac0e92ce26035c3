"""Traces of real daemons in a real Jaeger, read back through its query API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job
from tests.jaeger import Jaeger
from tests.telemetry.test_checkpoint_traces import JOB, RESTARTING_JOB, SUBTASKS


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def _parent(span: dict[str, Any]) -> int | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return int(refs[0]["spanID"], 16) if refs else None


def _service(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def _root(trace: dict[str, Any], name: str) -> dict[str, Any] | None:
    roots = [s for s in trace["spans"] if _parent(s) is None and s["operationName"] == name]
    return roots[0] if len(roots) == 1 else None


def _complete_checkpoint(traces: list[dict[str, Any]]) -> dict[str, Any] | None:
    for trace in traces:
        root = _root(trace, "checkpoint")
        snapshots = [s for s in trace["spans"] if s["operationName"] == "snapshot"]
        if (
            root is not None
            and _tags(root).get("mesh.checkpoint.outcome") == "COMPLETED"
            and len(snapshots) >= SUBTASKS
        ):
            return trace
    return None


@pytest.mark.asyncio
async def test_a_checkpoint_trace_in_jaeger_has_one_snapshot_per_subtask(
    jaeger: Jaeger, local_cluster, tmp_path: Path
) -> None:
    args = ["--otlp-endpoint", jaeger.otlp_endpoint]
    cluster = local_cluster(nodes=2, slots=2, coordinator_args=args, node_args=args)
    job_file = write_job(tmp_path, JOB)
    async with open_client(cluster.address) as client:
        job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
        await wait_for_state(client, job_id, ("RUNNING",))
        found = await poll_until(
            lambda: _complete_checkpoint(jaeger.traces("mesh-coordinator")),
            timeout_s=60,
            what="a completed checkpoint's trace in Jaeger",
        )
        await client.cancel(job_id)

    root = _root(found, "checkpoint")
    assert root is not None and _service(found, root) == "mesh-coordinator"
    assert _tags(root)["mesh.job.id"] == job_id
    snapshots = [s for s in found["spans"] if s["operationName"] == "snapshot"]
    assert len(snapshots) == SUBTASKS
    trace_id = int(root["traceID"], 16)
    for span in snapshots:
        assert int(span["traceID"], 16) == trace_id
        assert _parent(span) == int(root["spanID"], 16)
        assert _service(found, span) == "mesh-node"
    subtasks = {(_tags(s)["mesh.task"], _tags(s)["mesh.subtask.index"]) for s in snapshots}
    assert len(subtasks) == SUBTASKS


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_kill_9_failover_in_jaeger_has_its_steps_in_order_and_names_the_node(
    jaeger: Jaeger, local_cluster, tmp_path: Path
) -> None:
    args = ["--otlp-endpoint", jaeger.otlp_endpoint]
    heartbeats = {"MESH_HEARTBEAT_INTERVAL": "200ms", "MESH_HEARTBEAT_TIMEOUT": "1s"}
    cluster = local_cluster(nodes=3, slots=2, coordinator_args=args, node_args=args, env=heartbeats)
    job_file = write_job(tmp_path, RESTARTING_JOB)
    async with open_client(cluster.address) as client:
        job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
        status = await wait_for_state(client, job_id, ("RUNNING",))
        victim_id = status["placement"][0]["node"]
        victim = next(n for n in cluster.nodes if n.ready["MESH_NODE_ID"] == victim_id)
        cluster.kill(victim)

        def failover(traces: list[dict[str, Any]]) -> dict[str, Any] | None:
            for trace in traces:
                root = _root(trace, "failover")
                if root is not None and len(trace["spans"]) >= 4:
                    return trace
            return None

        found = await poll_until(
            lambda: failover(jaeger.traces("mesh-coordinator")),
            timeout_s=60,
            what="the failover's trace in Jaeger",
        )
        await client.cancel(job_id)

    root = _root(found, "failover")
    assert root is not None
    children = sorted(
        (s for s in found["spans"] if _parent(s) == int(root["spanID"], 16)),
        key=lambda s: s["startTime"],
    )
    assert [s["operationName"] for s in children] == ["cancel", "restore", "deploy"]
    cause = _tags(root)["mesh.failover.cause"]
    assert f"node {victim_id}" in cause and "lost" in cause
    assert _tags(root)["mesh.job.id"] == job_id
