"""The dashboard links each checkpoint and each failover to its trace in a real Jaeger:
the link names a trace Jaeger holds, and that trace is the checkpoint's (or the
failover's)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.helpers import poll_until_sync
from tests.jaeger import Jaeger, _http
from tests.web import GENERATOR_JOB, http, serving_cluster

JOB = GENERATOR_JOB.replace(
    'Job("dashboard-demo", parallelism=2, checkpoint_interval="500ms")',
    'Job("dashboard-demo", parallelism=2, checkpoint_interval="500ms", '
    'restart=RestartStrategy.fixed_delay(attempts=3, delay="100ms"))',
).replace("from mesh import Job,", "from mesh import Job, RestartStrategy,")


def _trace(jaeger: Jaeger, url: str) -> dict[str, Any] | None:
    """The trace a dashboard link points at, from Jaeger's API (None until it is there)."""
    prefix = f"{jaeger.query_url}/trace/"
    assert url.startswith(prefix), url
    status, body = _http("GET", f"{jaeger.query_url}/api/traces/{url.removeprefix(prefix)}")
    if status != 200:
        return None
    data = json.loads(body).get("data") or []
    return data[0] if data else None


def _root_names(trace: dict[str, Any]) -> set[str]:
    return {span["operationName"] for span in trace["spans"] if not span.get("references")}


def test_checkpoint_and_failover_link_to_their_traces(tmp_path: Path, jaeger: Jaeger) -> None:
    env = {"MESH_HEARTBEAT_INTERVAL": "100ms", "MESH_HEARTBEAT_TIMEOUT": "1s"}
    args = ["--otlp-endpoint", jaeger.otlp_endpoint, "--jaeger-url", jaeger.query_url]
    source = JOB.format(rate=1000, out=tmp_path / "out")
    with serving_cluster(tmp_path, job_source=source, coordinator_args=args, env=env) as served:
        base, job = served.base, served.job_id
        view = poll_until_sync(
            lambda: http(base, f"/api/v1/jobs/{job}/checkpoints").body,
            until=lambda v: v["restore_point"] and v["restore_point"]["trace_url"],
            timeout_s=30,
            what="a completed checkpoint with a trace link",
        )
        point = view["restore_point"]
        trace = poll_until_sync(
            lambda: _trace(jaeger, point["trace_url"]),
            timeout_s=30,
            what=f"Jaeger to hold the trace of checkpoint {point['checkpoint_id']}",
        )
        assert _root_names(trace) == {"checkpoint"}
        ids = {
            tag["value"]
            for span in trace["spans"]
            for tag in span["tags"]
            if tag["key"] == "mesh.checkpoint.id"
        }
        assert ids == {point["checkpoint_id"]}

        os.kill(served.cluster.nodes[1].pid, signal.SIGKILL)
        failovers = poll_until_sync(
            lambda: http(base, f"/api/v1/jobs/{job}/failovers").body,
            until=lambda f: f["failures"],
            timeout_s=30,
            what="the failover",
        )
        (failure,) = failovers["failures"]
        assert failure["cause"] == "node_lost" and failure["trace_url"]
        trace = poll_until_sync(
            lambda: _trace(jaeger, failure["trace_url"]),
            until=lambda t: t is not None and "failover" in _root_names(t),
            timeout_s=30,
            what="Jaeger to hold the failover's trace",
        )
        assert _root_names(trace) == {"failover"}
