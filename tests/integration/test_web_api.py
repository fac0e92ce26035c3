"""The REST API on a real coordinator and real nodes: what each endpoint answers about a
running job, its field names pinned, and the actions (cancel, savepoint) acting."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.coordinator.web.spec import openapi_spec
from mesh.transport.keys import generate_keys, http_token_path, write_http_token
from tests.helpers import poll_until_sync, wait_for_state
from tests.web import GENERATOR_JOB, ServedJob, http, serving_cluster

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "api_v1_fields.json"

JOB_WITH_RESTARTS = GENERATOR_JOB.replace(
    'Job("dashboard-demo", parallelism=2, checkpoint_interval="500ms")',
    'Job("dashboard-demo", parallelism=2, checkpoint_interval="500ms", '
    'restart=RestartStrategy.fixed_delay(attempts=3, delay="100ms"))',
).replace("from mesh import Job,", "from mesh import Job, RestartStrategy,")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedJob]:
    with serving_cluster(tmp_path_factory.mktemp("web-api")) as served:
        yield served


def get(served: ServedJob, path: str) -> Any:
    reply = http(served.base, path)
    assert reply.status == 200, (path, reply.status, reply.raw[:500])
    assert reply.headers["content-type"] == "application/json"
    return reply.body


def _fields(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema's field names, nested objects and lists of objects included."""
    schemas = openapi_spec()["components"]["schemas"]

    def walk(node: dict[str, Any]) -> Any:
        if "$ref" in node:
            return walk(schemas[node["$ref"].rsplit("/", 1)[1]])
        if "anyOf" in node:
            return next((walk(n) for n in node["anyOf"] if n.get("type") != "null"), None)
        if node.get("type") == "array":
            return [walk(node["items"])]
        if node.get("type") == "object" and "properties" in node:
            return {name: walk(sub) for name, sub in sorted(node["properties"].items())}
        return node.get("type", "any")

    return dict(walk(schema))


def test_field_names_are_pinned() -> None:
    """Renaming or dropping a field breaks clients: the spec's fields match the golden
    file (regenerate it only on purpose, with MESH_UPDATE_GOLDEN=1)."""
    schemas = openapi_spec()["components"]["schemas"]
    current = {name: _fields(schema) for name, schema in sorted(schemas.items())}
    if os.environ.get("MESH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(GOLDEN.read_text())


def _keys_match(body: Any, schema: dict[str, Any], where: str) -> None:
    """Every object in ``body`` has exactly the fields its schema lists."""
    schemas = openapi_spec()["components"]["schemas"]
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        if body is None:
            return
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        _keys_match(body, schema, where)
        return
    if schema.get("type") == "array":
        for i, item in enumerate(body):
            _keys_match(item, schema["items"], f"{where}[{i}]")
    elif schema.get("type") == "object" and "properties" in schema:
        assert set(body) == set(schema["properties"]), (where, sorted(body))
        for name, sub in schema["properties"].items():
            _keys_match(body[name], sub, f"{where}.{name}")


def test_every_endpoint_answers_with_the_fields_of_its_schema(served: ServedJob) -> None:
    spec = openapi_spec()
    job = served.job_id
    for path, methods in spec["paths"].items():
        if "get" not in methods:
            continue
        concrete = path.replace("{job_id}", job).replace("{task_id}", "1")
        schema = methods["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        _keys_match(get(served, concrete), schema, concrete)


def test_jobs_list_and_detail(served: ServedJob) -> None:
    jobs = get(served, "/api/v1/jobs")["jobs"]
    assert [(j["job_id"], j["name"], j["state"]) for j in jobs] == [
        (served.job_id, "dashboard-demo", "RUNNING")
    ]
    assert jobs[0]["tasks"] == 2 and jobs[0]["subtasks"] == 4
    assert get(served, "/api/v1/jobs?state=FINISHED")["jobs"] == []
    detail = get(served, f"/api/v1/jobs/{served.job_id}")
    assert detail["state"] == "RUNNING" and detail["attempt"] == 0 and detail["error"] is None
    assert detail["checkpoint_interval_ms"] == 500
    overview = get(served, "/api/v1/overview")
    assert overview["nodes"] == 2 and overview["slots"] == {"total": 4, "free": 2}
    assert overview["jobs"] == {"RUNNING": 1} and overview["security"] is False


def test_graph_shows_every_task_with_its_parallelism_and_rising_rates(served: ServedJob) -> None:
    graph = get(served, f"/api/v1/jobs/{served.job_id}/graph")
    tasks = {t["id"]: t for t in graph["tasks"]}
    assert [(t["name"], t["parallelism"]) for t in tasks.values()] == [
        ("Source: Generator -> Map", 2),
        ("Sum(n) -> Sink: JsonLines", 2),
    ]
    assert [(e["source"], e["target"], e["partitioning"]) for e in graph["edges"]] == [
        (0, 1, "hash")
    ]
    # Laid out left to right, inside the drawing, the edge from box to box.
    source, sink = tasks[0], tasks[1]
    assert source["x"] + source["width"] < sink["x"] + 1e-9
    assert sink["x"] + sink["width"] <= graph["width"] + 1e-9
    (edge,) = graph["edges"]
    assert edge["points"][0] == [source["x"] + source["width"], source["y"] + source["height"] / 2]
    assert edge["points"][-1] == [sink["x"], sink["y"] + sink["height"] / 2]

    def rates() -> dict[str, Any]:
        return get(served, f"/api/v1/jobs/{served.job_id}/graph")["tasks"][1]

    first = rates()
    later = poll_until_sync(
        rates,
        until=lambda t: t["records_in"] > first["records_in"] + 1000 and t["in_rate"] > 500,
        timeout_s=30,
        what="the sink task's records and rate to rise",
    )
    assert later["backpressure_level"] == "ok" and later["states"] == {"RUNNING": 2}
    points = poll_until_sync(
        lambda: get(served, f"/api/v1/jobs/{served.job_id}/metrics")["points"],
        until=lambda p: len(p) >= 2 and p[-1]["out_rate"] > 0,
        timeout_s=30,
        what="throughput points",
    )
    assert all(a["time_ms"] < b["time_ms"] for a, b in pairwise(points))


def test_subtasks_nodes_and_slots(served: ServedJob) -> None:
    subtasks = get(served, f"/api/v1/jobs/{served.job_id}/tasks/0/subtasks")["subtasks"]
    assert [s["subtask"] for s in subtasks] == ["0.0", "0.1"]
    assert {s["state"] for s in subtasks} == {"RUNNING"}
    assert all(s["input_fill"] is None for s in subtasks)  # a source has no input
    nodes = get(served, "/api/v1/nodes")["nodes"]
    assert len(nodes) == 2
    placed = {
        (n["node_id"], slot["slot"]): sorted(s["subtask"] for s in slot["subtasks"])
        for n in nodes
        for slot in n["slot_usage"]
        if slot["subtasks"]
    }
    # One slot-sharing group: each used slot holds one subtask of each task.
    assert sorted(placed.values()) == [["0.0", "1.0"], ["0.1", "1.1"]]
    assert {s["node"] for s in subtasks} == {node for node, _ in placed}
    for node in nodes:
        assert 0 <= node["heartbeat_age_ms"] < 10_000 and node["rss_bytes"] > 10 << 20


def test_checkpoints_history_and_restore_point(served: ServedJob) -> None:
    view = poll_until_sync(
        lambda: get(served, f"/api/v1/jobs/{served.job_id}/checkpoints?limit=3"),
        until=lambda v: v["counts"].get("COMPLETED", 0) >= 2,
        timeout_s=30,
        what="two completed checkpoints",
    )
    history = view["history"]
    assert 1 <= len(history) <= 3
    ids = [row["checkpoint_id"] for row in history]
    assert ids == sorted(ids, reverse=True)
    point = view["restore_point"]
    assert point["state"] == "COMPLETED" and point["kind"] == "checkpoint"
    assert Path(point["path"], "_metadata.json").exists()
    assert point["alignment_ms"] is not None and point["trace_url"] is None  # no Jaeger set


def test_watermarks_and_failovers_of_a_healthy_job(served: ServedJob) -> None:
    marks = get(served, f"/api/v1/jobs/{served.job_id}/watermarks")
    assert [row["subtask"] for row in marks["sources"]] == ["0.0", "0.1"]
    assert marks["windows"] == []
    failovers = get(served, f"/api/v1/jobs/{served.job_id}/failovers")
    assert failovers["failures"] == [] and failovers["checkpoint_failures"] == []
    assert failovers["dead_letters"] == {
        "total": 0,
        "by_subtask": [],
    }


def test_savepoint_and_cancel_from_the_api(tmp_path: Path) -> None:
    with serving_cluster(tmp_path) as served:
        reply = http(
            served.base,
            f"/api/v1/jobs/{served.job_id}/savepoints",
            method="POST",
            body=b'{"cancel": false}',
        )
        assert reply.status == 200, reply.raw
        taken = reply.body
        assert taken["cancelled"] is False and Path(taken["path"], "_metadata.json").exists()
        view = get(served, f"/api/v1/jobs/{served.job_id}/checkpoints")
        assert [s["path"] for s in view["savepoints"]] == [taken["path"]]

        reply = http(served.base, f"/api/v1/jobs/{served.job_id}/cancel", method="POST")
        assert reply.status == 202 and reply.body["detail"] == "cancelling"
        poll_until_sync(
            lambda: get(served, f"/api/v1/jobs/{served.job_id}")["state"],
            until=lambda s: s == "CANCELED",
            timeout_s=30,
            what="the job to be cancelled",
        )
        again = http(served.base, f"/api/v1/jobs/{served.job_id}/cancel", method="POST")
        assert again.status == 409 and again.body["field"] == "job_id"
        late = http(served.base, f"/api/v1/jobs/{served.job_id}/savepoints", method="POST")
        assert late.status == 409 and "only a running job" in late.body["error"]

        # The savepoint resumes: a new job from it starts where it left off.
        async def resume() -> dict[str, Any]:
            async with open_client(served.cluster.address) as client:
                submission = prepare_submission(
                    served.job_file, base_dir=tmp_path, restore_from=Path(taken["path"])
                )
                job_id = await client.submit(submission)
                return await wait_for_state(client, job_id, ("RUNNING",))

        status = anyio.run(resume)
        assert status["restored_from"] == taken["path"]


def test_a_lost_node_shows_as_a_failover_with_its_cause(tmp_path: Path) -> None:
    env = {"MESH_HEARTBEAT_INTERVAL": "100ms", "MESH_HEARTBEAT_TIMEOUT": "1s"}
    source = JOB_WITH_RESTARTS.format(rate=2000, out=tmp_path / "out")
    with serving_cluster(tmp_path, job_source=source, env=env) as served:
        victim = served.cluster.nodes[0]
        os.kill(victim.pid, signal.SIGKILL)
        failovers = poll_until_sync(
            lambda: get(served, f"/api/v1/jobs/{served.job_id}/failovers"),
            until=lambda f: f["failures"],
            timeout_s=30,
            what="a failure to be recorded",
        )
        (failure,) = failovers["failures"]
        assert failure["cause"] == "node_lost" and failure["attempt"] == 0
        assert "lost" in failure["summary"] and failure["trace_url"] is None


def test_with_keys_every_request_but_health_needs_the_token(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, ["coordinator", "node", "client"])
    write_http_token(keys)
    token = http_token_path(keys).read_text().strip()
    with serving_cluster(tmp_path, keys=keys) as served:
        assert http(served.base, "/api/v1/health").status == 200
        for path in ("/api/v1/jobs", "/api/v1/openapi.json", "/", f"/api/v1/jobs/{served.job_id}"):
            refused = http(served.base, path)
            assert refused.status == 401, path
            assert refused.body["code"] == "unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = http(served.base, "/api/v1/jobs", headers={"Authorization": "Bearer " + "x" * 43})
        assert wrong.status == 401
        bearer = http(served.base, "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status == 200 and bearer.body["jobs"][0]["job_id"] == served.job_id
        # The page: ?token= is traded for an HttpOnly, same-site cookie, and dropped from
        # the address.
        opened = http(served.base, f"/?token={token}")
        assert opened.status == 303 and opened.headers["location"] == "/"
        cookie = opened.headers["set-cookie"]
        assert cookie.startswith(f"mesh_token={token};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        with_cookie = http(
            served.base, "/api/v1/overview", headers={"Cookie": f"mesh_token={token}"}
        )
        assert with_cookie.status == 200 and with_cookie.body["security"] is True
        assert http(served.base, f"/?token={'y' * 43}").status == 401


def test_peek_samples_live_records_within_its_rate_then_stops(served: ServedJob) -> None:
    peek = f"/api/v1/jobs/{served.job_id}/tasks/0/peek"
    seen: list[dict[str, Any]] = []
    after = 0

    def ask() -> int:
        nonlocal after
        reply = http(served.base, f"{peek}?after={after}&max_per_second=5")
        assert reply.status == 200, reply.raw
        body = reply.body
        assert body["max_per_second"] == 5 and 0 < body["lease_ms"] <= 10_000
        seen.extend(body["records"])
        after = body["next"]
        return len(seen)

    poll_until_sync(ask, until=lambda n: n >= 12, timeout_s=30, what="12 peeked records")
    # What the source task emits, numbered in order, from both its subtasks.
    assert [r["seq"] for r in seen] == list(range(seen[0]["seq"], seen[0]["seq"] + len(seen)))
    assert all(set(r["value"]) == {"user", "n", "double"} for r in seen)
    assert all(r["value"]["double"] == 2 * r["value"]["n"] for r in seen)
    assert {r["subtask"] for r in seen} <= {"0.0", "0.1"}
    # Never more than the rate in any second.
    times = sorted(r["time_ms"] for r in seen)
    assert max(sum(1 for t in times if s <= t < s + 1000) for s in times) <= 5
    # Stopped: the nodes are told, and nothing more is kept.
    assert http(served.base, peek, method="DELETE").status == 204
    again = http(served.base, f"{peek}?after={after}&max_per_second=5").body
    assert again["records"] == [] and again["next"] == 0  # a new peek starts afresh
    http(served.base, peek, method="DELETE")


def test_another_site_cannot_act_through_the_page(served: ServedJob) -> None:
    """A page of another site open in the user's browser may neither change anything
    (cross-site request forgery) nor read through a name of its own that resolves to
    127.0.0.1 (DNS rebinding): both are refused, and the job runs on."""
    cancel = f"/api/v1/jobs/{served.job_id}/cancel"
    refusals = [
        http(served.base, "/api/v1/jobs", headers={"Host": "evil.example:8081"}),
        http(served.base, cancel, method="POST", headers={"Host": "evil.example"}),
        http(served.base, cancel, method="POST", headers={"Origin": "http://evil.example"}),
        http(served.base, cancel, method="POST", headers={"Origin": "http://localhost:3000"}),
        http(served.base, cancel, method="POST", headers={"Sec-Fetch-Site": "same-site"}),
        http(served.base, cancel, method="POST", headers={"Sec-Fetch-Site": "cross-site"}),
    ]
    for reply in refusals:
        assert reply.status == 403, reply.raw
        assert reply.body["code"] == "forbidden"
    # Loopback names and the server's own origin are fine.
    port = served.base.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert http(served.base, "/api/v1/overview", headers={"Host": host}).status == 200
    assert get(served, f"/api/v1/jobs/{served.job_id}")["state"] == "RUNNING"
    # No redirects: a trailing slash is an unknown path, answered in JSON.
    slash = http(served.base, "/api/v1/jobs/")
    assert slash.status == 404 and slash.body["code"] == "not_found"
