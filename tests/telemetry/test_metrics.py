"""Each daemon serves its metrics as Prometheus text at --metrics-port (real daemons,
real HTTP; parsed with prometheus_client's text parser, or scraped by a real
Prometheus)."""

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


def _metered_cluster(local_cluster: Any, slots: int = 2) -> tuple[Any, int, list[int]]:
    """A coordinator and two nodes of ``slots`` slots, each serving metrics on a port of
    its own: (cluster, coordinator's port, the nodes' ports)."""
    coordinator_port, node_ports = _free_port(), [_free_port(), _free_port()]
    cluster = local_cluster(
        nodes=1,
        slots=slots,
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
        "mesh_subtask_input_buffer_utilization",
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
    # The counts read two channels each: their barriers aligned (in no time, or some).
    assert any(
        lab.get("job_id") == job_id and value >= 0
        for lab, value in coordinator.get("mesh_job_checkpoint_alignment_duration_seconds", [])
    )


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_real_prometheus_scrapes_every_subtask_of_a_two_node_cluster(
    prometheus_binary_path: Path, local_cluster, tmp_path: Path
) -> None:
    cluster, coordinator_port, node_ports = _metered_cluster(local_cluster)
    targets = [f"127.0.0.1:{p}" for p in (coordinator_port, *node_ports)]
    job_file = write_job(tmp_path, JOB)
    counted_file = write_job(tmp_path, COUNTED_JOB, "counted.py")
    with running_prometheus(tmp_path / "prometheus", targets, prometheus_binary_path) as prom:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            counted = await client.submit(prepare_submission(counted_file, base_dir=tmp_path))
            await wait_for_state(client, counted, ("RUNNING",))
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
            totals = await poll_until(
                lambda: _by_task(
                    prom.query(f'mesh_subtask_records_in_total{{job_id="{counted}"}}')
                ),
                until=lambda found: (
                    found.get("counted") == COUNTED and found.get("copy -> out") == COUNTED
                ),
                timeout_s=30,
                interval_s=0.5,
                what=f"records_in of the counted pipeline reaching {COUNTED}",
            )
            counted_ratios = _by_task(
                prom.query(
                    f'rate(mesh_subtask_backpressure_time_seconds_total{{job_id="{counted}"}}[5s])'
                )
            )
            await client.cancel(job_id)
            await client.cancel(counted)

    nodes = {n.ready["MESH_NODE_ID"] for n in cluster.nodes}
    labels = [r["metric"] for r in series]
    assert {lab["node"] for lab in labels} == nodes
    assert {lab["job_name"] for lab in labels} == {"metered"}
    assert sorted(lab["subtask"] for lab in labels) == ["0", "0", "1", "1"]
    assert {lab["job"] for lab in labels} == {"mesh"}  # Prometheus's own scrape label
    assert all(float(r["value"][1]) < 0.1 for r in ratios), ratios
    assert [float(r["value"][1]) for r in restarts] == [0.0]
    # Every record the bounded source made was read once by each task of its pipeline.
    assert totals["counted"] == totals["copy -> out"] == COUNTED
    assert len(counted_ratios) == 3 and all(v < 0.1 for v in counted_ratios.values())


# A sink behind a map that takes a millisecond a record, in a slot of its own (so on the
# other node of two with one slot each): its source, unbounded and unthrottled, spends
# nearly all its time waiting for credit. A real stall: a buffer of 1024 records holds
# that node's loop for about a second, well inside the heartbeat timeout.
STALLED_JOB = """
    import time

    from mesh import Job, sinks, sources

    def slow(record):
        time.sleep(0.001)
        return record

    job = Job("stalled")
    (
        job.source(sources.Generator(lambda i: {"i": i})).name("gen").uid("gen")
        .rebalance().map(slow).name("slow").uid("slow").slot_sharing_group("slow")
        .sink(sinks.JsonLines("out/slow")).name("sink").uid("sink").slot_sharing_group("slow")
    )
"""

# A bounded pipeline of COUNTED records (its subtasks stay, ENDING, while the job runs
# on) and an unbounded trickle beside it that keeps the job running.
COUNTED = 3000
COUNTED_JOB = f"""
    from mesh import Job, sinks, sources

    job = Job("counted")
    (
        job.source(sources.Generator(lambda i: {{"i": i}}, count={COUNTED}, rate=3000))
        .name("counted").uid("counted")
        .rebalance().map(lambda r: r).name("copy").uid("copy")
        .sink(sinks.JsonLines("out/counted")).name("out").uid("out")
    )
    (
        job.source(sources.Generator(lambda i: {{"i": i}}, rate=20)).name("trickle")
        .uid("trickle")
        .sink(sinks.JsonLines("out/trickle")).name("trickle-out").uid("trickle-out")
    )
"""


def _by_task(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Prometheus rows keyed by their ``task`` label (one subtask each here)."""
    return {r["metric"]["task"]: float(r["value"][1]) for r in rows}


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_source_of_a_stalled_subtask_is_backpressured_and_the_stalled_one_not(
    prometheus_binary_path: Path, local_cluster, tmp_path: Path
) -> None:
    cluster, _, node_ports = _metered_cluster(local_cluster, slots=1)
    targets = [f"127.0.0.1:{p}" for p in node_ports]
    job_file = write_job(tmp_path, STALLED_JOB)
    with running_prometheus(tmp_path / "prometheus", targets, prometheus_binary_path) as prom:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))
            selector = f'{{job_id="{job_id}"}}'

            def ratios() -> tuple[dict[str, float], dict[str, float]]:
                rates = prom.query(
                    f"rate(mesh_subtask_backpressure_time_seconds_total{selector}[5s])"
                )
                gauges = prom.query(f"mesh_subtask_backpressure_ratio{selector}")
                return _by_task(rates), _by_task(gauges)

            rate, gauge = await poll_until(
                ratios,
                until=lambda found: (
                    len(found[0]) == len(found[1]) == 2
                    and found[0]["gen"] > 0.5
                    and found[1]["gen"] > 0.5
                ),
                timeout_s=40,
                interval_s=0.5,
                what="the stalled subtask's source backpressured over half the time",
            )
            # The slow subtask's input buffers hold data it has not got to yet, at least
            # at times (a frame counts once the node's loop, which the slow map holds,
            # has taken it off the socket); a source has none.
            buffers = await poll_until(
                lambda: _by_task(
                    prom.query(
                        f"max_over_time(mesh_subtask_input_buffer_utilization{selector}[1m])"
                    )
                ),
                until=lambda found: found.get("slow -> sink", 0) > 0,
                timeout_s=20,
                interval_s=0.5,
                what="the slow subtask's input buffers in use",
            )
            nodes = {
                r["metric"]["task"]: r["metric"]["node"]
                for r in prom.query(f"mesh_subtask_records_in_total{selector}")
            }
            await client.cancel(job_id)

    assert nodes["gen"] != nodes["slow -> sink"], nodes
    # The stalled subtask itself waits for nothing: it is the slow one.
    assert rate["slow -> sink"] < 0.1, rate
    assert gauge["slow -> sink"] < 0.1, gauge
    assert set(buffers) == {"slow -> sink"}, buffers
