"""Metrics exported by OTLP/HTTP (real daemons and a real HTTP receiver decoding the
protobuf requests): a node configured with an OTLP endpoint sends its per-subtask
instruments there, and a daemon that stops sends what it has not sent yet."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.telemetry.setup import start_metrics
from tests.helpers import poll_until, wait_for_state, write_job
from tests.jaeger import free_port
from tests.otlp import Point, otlp_receiver

JOB = """
    from mesh import Job, sinks, sources

    job = Job("exported", parallelism=2)
    (
        job.source(sources.Generator(lambda i: {"k": i % 7}, rate=500)).name("gen").uid("gen")
        .key_by(lambda r: r["k"]).count().name("count").uid("count")
        .sink(sinks.JsonLines("out/counts")).name("sink").uid("sink")
    )
"""


def _of(points: list[Point], name: str, job_id: str) -> list[Point]:
    return [p for p in points if p.name == name and p.attributes.get("job_id") == job_id]


@pytest.mark.asyncio
async def test_a_node_exports_its_subtasks_metrics_to_the_otlp_endpoint(
    local_cluster, tmp_path: Path
) -> None:
    with otlp_receiver() as receiver:
        cluster = local_cluster(
            nodes=1,
            slots=2,
            node_args=["--otlp-endpoint", receiver.endpoint],
            env={"OTEL_METRIC_EXPORT_INTERVAL": "300"},
        )
        job_file = write_job(tmp_path, JOB)
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_state(client, job_id, ("RUNNING",))

            def subtasks(name: str) -> dict[tuple[str, int], Point]:
                """The latest point of each subtask (later exports come later)."""
                latest = {}
                for p in _of(receiver.metric_points(), name, job_id):
                    latest[(p.attributes["task"], p.attributes["subtask"])] = p
                return latest

            records_in = await poll_until(
                lambda: subtasks("mesh.subtask.records_in"),
                until=lambda found: len(found) == 4 and all(p.value > 0 for p in found.values()),
                timeout_s=30,
                what="records_in of the 4 subtasks, each above 0, at the receiver",
                show=lambda found: repr({k: p.value for k, p in found.items()}),
            )
            rates = await poll_until(
                lambda: subtasks("mesh.subtask.records_in.rate"),
                until=lambda found: len(found) == 4,
                timeout_s=30,
                what="records_in.rate of the 4 subtasks at the receiver",
            )
            ratios = subtasks("mesh.subtask.backpressure.ratio")
            await client.cancel(job_id)

    node_id = cluster.nodes[0].ready["MESH_NODE_ID"]
    points = list(records_in.values())
    assert {(p.service, p.instance) for p in points} == {("mesh-node", node_id)}
    assert {(p.kind, p.monotonic, p.unit) for p in points} == {("sum", True, "{record}")}
    assert {p.attributes["job_name"] for p in points} == {"exported"}
    assert {p.attributes["node"] for p in points} == {node_id}
    assert sorted(records_in) == [(t, i) for t in ("count -> sink", "gen") for i in (0, 1)]
    assert {(p.kind, p.unit) for p in rates.values()} == {("gauge", "{record}/s")}
    # The sources make 500 records a second between them.
    assert 100 < rates[("gen", 0)].value + rates[("gen", 1)].value < 1000, rates
    assert all(0 <= p.value < 0.1 for p in ratios.values()), ratios
    assert receiver.bad_requests == []


def test_stopping_exports_what_was_not_exported_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # never, in this test
    with otlp_receiver() as receiver:
        installed = start_metrics("mesh-test", "instance-1", "127.0.0.1", 0, receiver.endpoint)
        assert installed is not None and installed.endpoint is None
        meter = installed.provider.get_meter("mesh.test")
        meter.create_counter("mesh.test.things", unit="{thing}").add(3, {"job_id": "j"})
        assert receiver.metric_points() == []
        installed.shutdown()
        [point] = receiver.metric_points()
    assert (point.service, point.instance) == ("mesh-test", "instance-1")
    assert (point.name, point.value, point.attributes) == ("mesh.test.things", 3, {"job_id": "j"})


def test_a_collector_that_is_down_does_not_hold_up_a_stopping_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    installed = start_metrics("mesh-test", None, "127.0.0.1", 0, dead)
    assert installed is not None
    installed.provider.get_meter("mesh.test").create_counter("mesh.test.things").add(1)
    started = time.monotonic()
    installed.shutdown()
    assert time.monotonic() - started < 5.0


def test_without_a_port_or_an_endpoint_nothing_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    assert start_metrics("mesh-test", None, "127.0.0.1", 0, None) is None
