"""Each daemon serves its metrics as Prometheus text at --metrics-port (real daemons,
real HTTP; parsed with prometheus_client's text parser)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job
from tests.prometheus import running_prometheus

JOB = """
    from mesh import Job, sinks, sources

    job = Job("metered", parallelism=2, checkpoint_interval="200ms")
    (
        job.source(sources.Generator(lambda i: {"k": i % 7}, rate=1000)).uid("gen")
        .key_by(lambda r: r["k"]).count().uid("count")
        .sink(sinks.JsonLines("out/counts")).uid("sink")
    )
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from a daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _metered_cluster(local_cluster: Any) -> tuple[Any, int, list[int]]:
    """A coordinator and two nodes, each serving metrics on a port of its own:
    (cluster, coordinator's port, the nodes' ports)."""
    coordinator_port, node_ports = _free_port(), [_free_port(), _free_port()]
    cluster = local_cluster(
        nodes=1,
        slots=2,
        coordinator_args=["--metrics-port", str(coordinator_port)],
        env={"MESH_METRICS_PORT": str(node_ports[0])},
    )
    cluster.add_node(env={"MESH_METRICS_PORT": str(node_ports[1])})
    return cluster, coordinator_port, node_ports


@pytest.mark.asyncio
async def test_nodes_and_the_coordinator_serve_per_subtask_and_per_job_metrics(
    local_cluster, tmp_path: Path
) -> None:
    cluster, coordinator_port, node_ports = _metered_cluster(local_cluster)
    job_file = write_job(tmp_path, JOB)
    async with open_client(cluster.address) as client:
        job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
        await wait_for_state(client, job_id, ("RUNNING",))

        def subtasks() -> list[tuple[dict[str, str], float]]:
            return [
                row
                for port in node_ports
                for row in _scrape(port).get("mesh_subtask_records_in_total", [])
                if row[0].get("job_id") == job_id
            ]

        rows = await poll_until(
            subtasks,
            until=lambda rows: len(rows) == 4 and all(value > 0 for _, value in rows),
            timeout_s=30,
            what="records_in of all 4 subtasks, each above 0",
        )
        coordinator = await poll_until(
            lambda: _scrape(coordinator_port),
            until=lambda s: any(
                labels.get("job_id") == job_id and value >= 1
                for labels, value in s.get("mesh_job_checkpoints_completed_total", [])
            ),
            timeout_s=30,
            what="a completed checkpoint in the coordinator's metrics",
        )
        node = _scrape(node_ports[0])
        await client.cancel(job_id)

    labels = [row[0] for row in rows]
    assert {lab["job_name"] for lab in labels} == {"metered"}
    assert sorted((lab["task"], lab["subtask"]) for lab in labels) == sorted(
        [(task, index) for task in {lab["task"] for lab in labels} for index in ("0", "1")]
    )
    nodes = {n.ready["MESH_NODE_ID"] for n in cluster.nodes}
    assert {lab["node"] for lab in labels} == nodes
    for name in (
        "mesh_subtask_records_out_total",
        "mesh_subtask_backpressure_time_seconds_total",
        "mesh_subtask_dead_letters_total",
    ):
        assert any(lab.get("job_id") == job_id for lab, _ in node.get(name, [])), name
    assert [
        value
        for lab, value in coordinator["mesh_job_restarts_total"]
        if lab.get("job_id") == job_id
    ] == [0]
    assert any(
        lab.get("job_id") == job_id and value > 0
        for lab, value in coordinator.get("mesh_job_checkpoint_size_bytes", [])
    )


@pytest.mark.asyncio
async def test_a_real_prometheus_scrapes_every_subtask_of_a_two_node_cluster(
    prometheus_binary_path: Path, local_cluster, tmp_path: Path
) -> None:
    cluster, coordinator_port, node_ports = _metered_cluster(local_cluster)
    targets = [f"127.0.0.1:{p}" for p in (coordinator_port, *node_ports)]
    job_file = write_job(tmp_path, JOB)
    with running_prometheus(tmp_path / "prometheus", targets, prometheus_binary_path) as prom:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            selector = f'{{job_id="{job_id}"}}'
            series = await poll_until(
                lambda: prom.query(f"mesh_subtask_records_in_total{selector}"),
                until=lambda rows: len(rows) == 4 and all(float(r["value"][1]) > 0 for r in rows),
                timeout_s=30,
                what="4 records_in series in Prometheus, each above 0",
            )
            # The job runs unhindered: no subtask spends a tenth of its time waiting.
            ratios = await poll_until(
                lambda: prom.query(
                    f"rate(mesh_subtask_backpressure_time_seconds_total{selector}[5s])"
                ),
                until=lambda rows: len(rows) == 4,
                timeout_s=30,
                what="backpressure ratios of the 4 subtasks",
            )
            restarts = prom.query(f"mesh_job_restarts_total{selector}")
            await client.cancel(job_id)

    nodes = {n.ready["MESH_NODE_ID"] for n in cluster.nodes}
    labels = [r["metric"] for r in series]
    assert {lab["node"] for lab in labels} == nodes
    assert {lab["job_name"] for lab in labels} == {"metered"}
    assert sorted(lab["subtask"] for lab in labels) == ["0", "0", "1", "1"]
    assert {lab["job"] for lab in labels} == {"mesh"}  # Prometheus's own scrape label
    assert all(float(r["value"][1]) < 0.1 for r in ratios), ratios
    assert [float(r["value"][1]) for r in restarts] == [0.0]
