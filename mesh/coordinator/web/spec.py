"""The REST API's OpenAPI 3.1 description, served at ``/api/v1/openapi.json``.

It states every rule the server enforces (id patterns, bounds, enums, closed objects),
so a client generated from it, or a fuzzer, never meets a refusal the spec did not
announce; tests check real responses against it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from mesh._version import __version__
from mesh.coordinator.jobs import FAILURE_CAUSES
from mesh.protocol.states import CheckpointKind, CheckpointOutcome, JobState

__all__ = ["JOB_ID_PATTERN", "MAX_BODY_BYTES", "MAX_TASK_ID", "openapi_spec"]

#: Job ids are 16 lowercase hex digits.
JOB_ID_PATTERN = "^[0-9a-f]{16}$"
#: The largest task number the API accepts in a path.
MAX_TASK_ID = 1_000_000
#: The largest request body the API reads (a larger one gets a 413).
MAX_BODY_BYTES = 64 * 1024

_S: dict[str, Any] = {"type": "string"}
_I: dict[str, Any] = {"type": "integer"}
_N: dict[str, Any] = {"type": "number"}
_B: dict[str, Any] = {"type": "boolean"}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(**props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": sorted(props),
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _counts() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": _COUNT}


_JOB_ID = {"type": "string", "pattern": JOB_ID_PATTERN}
_STATE = {"type": "string", "enum": [s.value for s in JobState]}
_LEVEL = {"type": "string", "enum": ["ok", "low", "high"]}

_SUMMARY = {
    "job_id": _JOB_ID,
    "name": _S,
    "state": _STATE,
    "attempt": _COUNT,
    "restarts": _COUNT,
    "created_ms": _I,
    "started_ms": _I,
    "ended_ms": _I,
    "uptime_ms": _COUNT,
    "tasks": _COUNT,
    "subtasks": _COUNT,
}

_CHECKPOINT = _obj(
    checkpoint_id=_COUNT,
    kind={"type": "string", "enum": [k.value for k in CheckpointKind]},
    state={"type": "string", "enum": [o.value for o in CheckpointOutcome]},
    path=_S,
    triggered_ms=_I,
    ended_ms=_I,
    duration_ms=_I,
    size_bytes=_COUNT,
    alignment_ms=_null(_N),
    reason=_null(_S),
    trace_url=_null(_S),
)

_SCHEMAS: dict[str, Any] = {
    "Error": {
        **_obj(error=_S, code=_S, field=_null(_S)),
        "description": "A refused request: the message, a code, and the field at fault.",
    },
    "Health": _obj(status={"type": "string", "const": "ok"}, version=_S),
    "Overview": _obj(
        version=_S,
        coordinator=_null(_S),
        security=_B,
        jaeger_url=_null(_S),
        nodes=_COUNT,
        slots=_obj(total=_COUNT, free=_COUNT),
        jobs=_counts(),
    ),
    "JobSummary": _obj(**_SUMMARY),
    "JobList": _obj(jobs=_list(_ref("JobSummary"))),
    "Bottleneck": _obj(
        task=_COUNT,
        name=_S,
        subtask=_S,
        node=_null(_S),
        backpressure_ratio=_N,
        upstream=_null(_S),
        reason=_S,
    ),
    "Checkpoint": _CHECKPOINT,
    "JobDetail": _obj(
        **_SUMMARY,
        error=_null(_S),
        restart_strategy=_S,
        parallelism=_COUNT,
        slots_needed=_COUNT,
        waiting_for_slots=_null(_S),
        totals=_obj(records_in=_N, records_out=_N, in_rate=_N, out_rate=_N),
        source_progress=_null(_N),
        dead_letters=_COUNT,
        late_records=_COUNT,
        bottleneck=_null(_ref("Bottleneck")),
        checkpoint_interval_ms=_null(_I),
        latest_checkpoint=_null(_ref("Checkpoint")),
        restored_from=_null(_S),
    ),
    "GraphTask": _obj(
        id=_COUNT,
        name=_S,
        parallelism=_COUNT,
        slot_sharing_group=_S,
        operators=_list(_obj(uid=_S, name=_S, kind=_S)),
        x=_N,
        y=_N,
        width=_N,
        height=_N,
        records_in=_COUNT,
        records_out=_COUNT,
        in_rate=_N,
        out_rate=_N,
        backpressure_ratio=_N,
        backpressure_level=_LEVEL,
        input_fill=_null(_N),
        watermark=_null(_I),
        dead_letters=_COUNT,
        states=_counts(),
    ),
    "GraphEdge": _obj(
        source=_COUNT,
        target=_COUNT,
        partitioning=_S,
        points=_list({"type": "array", "items": _N, "minItems": 2, "maxItems": 2}),
    ),
    "Graph": _obj(
        job_id=_JOB_ID,
        state=_STATE,
        attempt=_COUNT,
        width=_N,
        height=_N,
        tasks=_list(_ref("GraphTask")),
        edges=_list(_ref("GraphEdge")),
        bottleneck=_null(_ref("Bottleneck")),
    ),
    "Subtask": _obj(
        subtask=_S,
        index=_COUNT,
        node=_null(_S),
        slot=_null(_COUNT),
        state=_S,
        records_in=_COUNT,
        records_out=_COUNT,
        in_rate=_N,
        out_rate=_N,
        backpressure_ratio=_N,
        backpressure_level=_LEVEL,
        input_fill=_null(_N),
        watermark=_null(_I),
        watermark_lag_ms=_null(_I),
        dead_letters=_COUNT,
        late_records=_COUNT,
    ),
    "Subtasks": _obj(
        job_id=_JOB_ID,
        task=_COUNT,
        name=_S,
        parallelism=_COUNT,
        subtasks=_list(_ref("Subtask")),
    ),
    "Checkpoints": _obj(
        job_id=_JOB_ID,
        interval_ms=_null(_I),
        in_flight=_null(_COUNT),
        counts=_counts(),
        last_failure=_null(_S),
        restore_point=_null(_ref("Checkpoint")),
        restored_from=_null(_S),
        history=_list(_ref("Checkpoint")),
        savepoints=_list(_ref("Checkpoint")),
    ),
    "Failovers": _obj(
        job_id=_JOB_ID,
        state=_STATE,
        attempt=_COUNT,
        restarts=_COUNT,
        restart_strategy=_S,
        error=_null(_S),
        failures=_list(
            _obj(
                time_ms=_I,
                attempt=_COUNT,
                cause={"type": "string", "enum": list(FAILURE_CAUSES)},
                summary=_S,
                error=_S,
                trace_url=_null(_S),
            )
        ),
        checkpoint_failures=_list(
            _obj(
                checkpoint_id=_COUNT,
                kind={"type": "string", "enum": [k.value for k in CheckpointKind]},
                time_ms=_I,
                reason=_S,
                trace_url=_null(_S),
            )
        ),
        dead_letters=_obj(total=_COUNT, by_subtask=_list(_obj(subtask=_S, count=_COUNT))),
    ),
    "Watermark": _obj(
        task=_COUNT,
        name=_S,
        subtask=_S,
        watermark=_null(_I),
        lag_ms=_null(_I),
        late_records=_COUNT,
    ),
    "Watermarks": _obj(
        job_id=_JOB_ID, sources=_list(_ref("Watermark")), windows=_list(_ref("Watermark"))
    ),
    "Metrics": _obj(
        job_id=_JOB_ID,
        interval_ms=_COUNT,
        points=_list(_obj(time_ms=_I, in_rate=_N, out_rate=_N, backpressure_ratio=_N)),
    ),
    "Peek": _obj(
        job_id=_JOB_ID,
        task=_COUNT,
        max_per_second=_COUNT,
        lease_ms=_COUNT,
        next=_COUNT,
        records=_list(_obj(seq=_COUNT, subtask=_S, time_ms=_I, value={})),
    ),
    "Nodes": _obj(
        nodes=_list(
            _obj(
                node_id=_S,
                host=_S,
                pid=_I,
                slots=_COUNT,
                free=_COUNT,
                leaving=_B,
                heartbeat_age_ms=_I,
                rss_bytes=_COUNT,
                wire_errors=_COUNT,
                slot_usage=_list(
                    _obj(
                        slot=_COUNT,
                        job_id=_null(_S),
                        state={"type": "string", "enum": ["free", "used", "held"]},
                        subtasks=_list(
                            _obj(
                                job_id=_JOB_ID,
                                job_name=_S,
                                subtask=_S,
                                name=_S,
                                slot_sharing_group=_S,
                                co_location_group=_null(_S),
                            )
                        ),
                    )
                ),
            )
        )
    ),
    "Cancelled": _obj(job_id=_JOB_ID, state=_STATE, detail=_S),
    "SavepointRequest": {
        "type": "object",
        "properties": {
            "cancel": {**_B, "default": False, "description": "cancel the job once taken"},
            "directory": {
                **_null({"type": "string", "pattern": "^/[^\\u0000]*$"}),
                "description": "an absolute directory (default: beside the checkpoints)",
            },
        },
        "additionalProperties": False,
    },
    "Savepoint": _obj(job_id=_JOB_ID, path=_S, checkpoint_id=_COUNT, cancelled=_B),
}

_JOB_PARAM = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": _JOB_ID,
    "description": "the job's id (16 hex digits, as `mesh list` shows)",
}
_TASK_PARAM = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TASK_ID},
    "description": "a task of the job graph (its `id` in the graph)",
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _reply(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _op(
    summary: str,
    schema: str,
    *,
    params: list[dict[str, Any]] | None = None,
    status: str = "200",
    errors: tuple[str, ...] = ("400", "401", "404"),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    reasons = {
        "400": "a malformed id, parameter or body (the field is named)",
        "401": "security is on and the request lacks the coordinator's HTTP token",
        "404": "no such job or task",
        "409": "the job is not in a state that allows this",
        "413": f"the body is over {MAX_BODY_BYTES} bytes",
    }
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {
            status: _reply(schema, summary),
            **{code: _reply("Error", reasons[code]) for code in errors},
        },
    }
    if body is not None:
        op["requestBody"] = body
    return op


@cache
def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document."""
    job, task = [_JOB_PARAM], [_JOB_PARAM, _TASK_PARAM]
    paths = {
        "/api/v1/health": {"get": _op("The coordinator is up", "Health", errors=())},
        "/api/v1/overview": {"get": _op("The cluster at a glance", "Overview", errors=("401",))},
        "/api/v1/jobs": {
            "get": _op(
                "Every job the coordinator keeps, newest first",
                "JobList",
                params=[_query("state", _STATE, "only jobs in this state")],
                errors=("400", "401"),
            )
        },
        "/api/v1/jobs/{job_id}": {"get": _op("One job", "JobDetail", params=job)},
        "/api/v1/jobs/{job_id}/graph": {
            "get": _op("The job graph, laid out, with live figures", "Graph", params=job)
        },
        "/api/v1/jobs/{job_id}/tasks/{task_id}/subtasks": {
            "get": _op("Every subtask of a task", "Subtasks", params=task)
        },
        "/api/v1/jobs/{job_id}/tasks/{task_id}/peek": {
            "get": _op(
                "A live sample of the records a task emits (asking turns sampling on for "
                "10 s; at most max_per_second records a second are kept)",
                "Peek",
                params=[
                    *task,
                    _query(
                        "after",
                        {"type": "integer", "minimum": 0, "maximum": 2**53},
                        "only samples after this sequence number (the previous `next`)",
                    ),
                    _query(
                        "max_per_second",
                        {"type": "integer", "minimum": 1, "maximum": 100},
                        "the most records a second to sample (default 10)",
                    ),
                ],
                errors=("400", "401", "404", "409"),
            ),
            "delete": {
                "summary": "Stop sampling a task now",
                "parameters": task,
                "responses": {
                    "204": {"description": "stopped (or was not on)"},
                    **{
                        code: _reply("Error", text)
                        for code, text in (
                            ("400", "a malformed id"),
                            ("401", "the HTTP token is missing"),
                            ("404", "no such job or task"),
                        )
                    },
                },
            },
        },
        "/api/v1/jobs/{job_id}/checkpoints": {
            "get": _op(
                "Checkpoint and savepoint history, newest first, and the restore point",
                "Checkpoints",
                params=[
                    _JOB_PARAM,
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500},
                        "the most history rows (default 50)",
                    ),
                ],
            )
        },
        "/api/v1/jobs/{job_id}/failovers": {
            "get": _op("Failures with their causes, and dead letters", "Failovers", params=job)
        },
        "/api/v1/jobs/{job_id}/watermarks": {
            "get": _op("Watermarks of sources and window operators", "Watermarks", params=job)
        },
        "/api/v1/jobs/{job_id}/metrics": {
            "get": _op("Records/s over the last minutes", "Metrics", params=job)
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": _op(
                "Cancel a job",
                "Cancelled",
                params=job,
                status="202",
                errors=("400", "401", "404", "409"),
            )
        },
        "/api/v1/jobs/{job_id}/savepoints": {
            "post": _op(
                "Take a savepoint (answered once it completes), and cancel if asked",
                "Savepoint",
                params=job,
                errors=("400", "401", "404", "409", "413"),
                body={
                    "required": False,
                    "content": {"application/json": {"schema": _ref("SavepointRequest")}},
                },
            )
        },
        "/api/v1/nodes": {
            "get": _op("Every node, its slots and what runs in them", "Nodes", errors=("401",))
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mesh coordinator",
            "version": __version__,
            "description": (
                "The REST API of a mesh coordinator. Errors are JSON objects naming the "
                "field at fault. With security on, every operation but health needs the "
                "coordinator's HTTP token as a bearer token."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
