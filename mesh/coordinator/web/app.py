"""The ASGI app: the REST API under ``/api/v1/`` and the dashboard's static page.

Every handler reads the coordinator's records on its event loop and answers at once
(nothing is awaited in between, so nothing is seen half-updated); only a savepoint
waits, for its completion. Bad input gets a 4xx with a JSON body naming the field:
``{"error": message, "code": code, "field": name or null}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from mesh._version import __version__
from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.registry import NodeRegistry
from mesh.coordinator.requests import ClientRequests
from mesh.coordinator.store import CheckpointStore
from mesh.coordinator.web import views
from mesh.coordinator.web.guard import RequestGuard
from mesh.coordinator.web.history import HISTORY_INTERVAL_MS, JobHistory
from mesh.coordinator.web.peek import MAX_PER_SECOND, PeekHub
from mesh.coordinator.web.spec import JOB_ID_PATTERN, MAX_BODY_BYTES, MAX_TASK_ID, openapi_spec
from mesh.graph.layout import Layout
from mesh.protocol.states import JobState
from mesh.time.clock import Clock

__all__ = ["ApiError", "Dashboard", "build_app"]

_JOB_ID = re.compile(JOB_ID_PATTERN)
_STATES = {s.value for s in JobState}
_INTEGER = re.compile(r"-?[0-9]+")
# How long a savepoint asked over HTTP is waited for before the answer says so.
_SAVEPOINT_WAIT_S = 600.0
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    """A request the API refuses: ``status``, a ``code``, and the ``field`` at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass
class Dashboard:
    """What the HTTP face reads and acts on: the coordinator's records and collaborators."""

    clock: Clock
    jobs: JobTable
    nodes: NodeRegistry
    store: CheckpointStore
    requests: ClientRequests
    cancel: Callable[[JobRecord], str]  # cancels a job; says what happened
    history: JobHistory
    peek: PeekHub
    endpoint: Callable[[], str | None]  # the coordinator's control endpoint
    token: str | None = None  # required of every request but health (security on)
    jaeger_url: str | None = None

    def __post_init__(self) -> None:
        self._layouts: dict[str, tuple[object, Layout[int]]] = {}

    def layout(self, job: JobRecord) -> Layout[int]:
        """The job graph's drawing, computed once per graph."""
        cached = self._layouts.get(job.job_id)
        if cached is None or cached[0] is not job.graph:
            if len(self._layouts) > 2 * len(self.jobs) + 16:
                self._layouts = {k: v for k, v in self._layouts.items() if k in self.jobs}
            cached = (job.graph, views.graph_layout(job.graph))
            self._layouts[job.job_id] = cached
        return cached[1]


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, code: str, message: str, field: str | None = None) -> Response:
    return _json({"error": message, "code": code, "field": field}, status)


def _job(d: Dashboard, request: Request) -> JobRecord:
    job_id = request.path_params["job_id"]
    if not _JOB_ID.fullmatch(job_id):
        raise ApiError(400, "bad_id", f"job_id {job_id!r} is not 16 hex digits", "job_id")
    job = d.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id}", "job_id")
    return job


def _task(job: JobRecord, request: Request) -> int:
    text = request.path_params["task_id"]
    # ASCII digits, and not too many of them (int() refuses over 4300).
    if (
        not (text.isascii() and text.isdigit())
        or len(text.lstrip("0")) > len(str(MAX_TASK_ID))
        or int(text) > MAX_TASK_ID
    ):
        raise ApiError(
            400, "bad_id", f"task_id {text!r} is not a task number (0..{MAX_TASK_ID})", "task_id"
        )
    task = int(text)
    if all(t.id != task for t in job.graph.job.tasks):
        raise ApiError(404, "not_found", f"job {job.job_id} has no task {task}", "task_id")
    return task


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    # Only ASCII digits: int() would take " 5", "1_0" and other scripts' digits too.
    if not _INTEGER.fullmatch(text):
        raise ApiError(400, "bad_param", f"{name} {text[:40]!r} is not an integer", name)
    if len(text.lstrip("-0")) > len(str(high)) or not low <= int(text) <= high:
        raise ApiError(400, "bad_param", f"{name} must be in {low}..{high}, got {text[:40]}", name)
    return int(text)


def build_app(d: Dashboard, *, loopback: bool) -> ASGIApp:
    """The ASGI app serving ``d``; ``loopback``: it listens on a loopback address."""

    def now() -> int:
        return d.clock.now_ms()

    async def health(request: Request) -> Response:
        return _json({"status": "ok", "version": __version__})

    async def spec(request: Request) -> Response:
        return _json(openapi_spec())

    async def overview(request: Request) -> Response:
        states: dict[str, int] = {}
        for job in d.jobs.values():
            states[job.state.value] = states.get(job.state.value, 0) + 1
        nodes = list(d.nodes.nodes.values())
        return _json(
            {
                "version": __version__,
                "coordinator": d.endpoint(),
                "security": d.token is not None,
                "jaeger_url": d.jaeger_url,
                "nodes": len(nodes),
                "slots": {
                    "total": sum(n.slots for n in nodes),
                    "free": sum(len(n.free_slots()) for n in nodes),
                },
                "jobs": states,
            }
        )

    async def jobs(request: Request) -> Response:
        state = request.query_params.get("state")
        if state is not None and state not in _STATES:
            raise ApiError(
                400, "bad_param", f"state {state!r} is not one of {sorted(_STATES)}", "state"
            )
        rows = sorted(d.jobs.values(), key=lambda j: j.created_ms, reverse=True)
        t = now()
        return _json(
            {"jobs": [views.job_summary(j, t) for j in rows if state in (None, j.state.value)]}
        )

    async def job(request: Request) -> Response:
        return _json(views.job_detail(_job(d, request), now()))

    async def graph(request: Request) -> Response:
        j = _job(d, request)
        return _json(views.graph_view(j, now(), d.layout(j)))

    async def subtasks(request: Request) -> Response:
        j = _job(d, request)
        return _json(views.subtasks_view(j, _task(j, request), now()))

    async def checkpoints(request: Request) -> Response:
        j = _job(d, request)
        limit = _int_param(request, "limit", 50, 1, 500)
        return _json(views.checkpoints_view(j, d.store.history(j.job_id), limit, d.jaeger_url))

    async def failovers(request: Request) -> Response:
        j = _job(d, request)
        return _json(views.failovers_view(j, d.store.history(j.job_id), d.jaeger_url))

    async def watermarks(request: Request) -> Response:
        return _json(views.watermarks_view(_job(d, request), now()))

    async def metrics(request: Request) -> Response:
        j = _job(d, request)
        return _json(
            {
                "job_id": j.job_id,
                "interval_ms": HISTORY_INTERVAL_MS,
                "points": [p.to_dict() for p in d.history.points(j.job_id)],
            }
        )

    async def peek(request: Request) -> Response:
        if request.method == "DELETE":
            return await stop_peek(request)
        j = _job(d, request)
        task = _task(j, request)
        after = _int_param(request, "after", 0, 0, 2**53)
        rate = _int_param(request, "max_per_second", 10, 1, MAX_PER_SECOND)
        if j.done:
            raise ApiError(409, "not_running", f"job {j.job_id} is {j.state.value}", "job_id")
        return _json(
            d.peek.ask(j, task, after=after, max_per_second=rate, now_ms=d.clock.monotonic_ms())
        )

    async def stop_peek(request: Request) -> Response:
        j = _job(d, request)
        d.peek.stop(j, _task(j, request))
        return Response(status_code=204, headers={"Cache-Control": "no-store"})

    async def nodes(request: Request) -> Response:
        return _json(views.nodes_view(d.nodes, list(d.jobs.values()), d.clock.monotonic_ms()))

    async def cancel(request: Request) -> Response:
        j = _job(d, request)
        if j.done:
            raise ApiError(409, "not_running", f"job {j.job_id} is {j.state.value}", "job_id")
        detail = d.cancel(j)
        return _json({"job_id": j.job_id, "state": j.state.value, "detail": detail}, 202)

    async def savepoint(request: Request) -> Response:
        j = _job(d, request)
        body = await _savepoint_body(request)
        outcome: dict[str, Any] = {}
        finished = anyio.Event()

        def done(path: str | None, checkpoint_id: int, error: str | None) -> None:
            outcome.update(path=path, checkpoint_id=checkpoint_id, error=error)
            finished.set()

        refused = d.requests.take_savepoint(j, body["directory"], cancel=body["cancel"], done=done)
        if refused:
            raise ApiError(409, "not_running", refused, "job_id")
        with anyio.move_on_after(_SAVEPOINT_WAIT_S):
            await finished.wait()
        if not finished.is_set():
            raise ApiError(409, "savepoint_pending", "the savepoint is still in progress", None)
        if outcome["path"] is None:
            raise ApiError(409, "savepoint_failed", f"savepoint failed: {outcome['error']}")
        return _json(
            {
                "job_id": j.job_id,
                "path": outcome["path"],
                "checkpoint_id": outcome["checkpoint_id"],
                "cancelled": body["cancel"],
            }
        )

    routes = [
        Route("/api/v1/health", health),
        Route("/api/v1/openapi.json", spec),
        Route("/api/v1/overview", overview),
        Route("/api/v1/jobs", jobs),
        Route("/api/v1/jobs/{job_id}", job),
        Route("/api/v1/jobs/{job_id}/graph", graph),
        Route("/api/v1/jobs/{job_id}/tasks/{task_id}/subtasks", subtasks),
        # One route for both methods: a 405 must list them both in its Allow.
        Route("/api/v1/jobs/{job_id}/tasks/{task_id}/peek", peek, methods=["GET", "DELETE"]),
        Route("/api/v1/jobs/{job_id}/checkpoints", checkpoints),
        Route("/api/v1/jobs/{job_id}/failovers", failovers),
        Route("/api/v1/jobs/{job_id}/watermarks", watermarks),
        Route("/api/v1/jobs/{job_id}/metrics", metrics),
        Route("/api/v1/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/api/v1/jobs/{job_id}/savepoints", savepoint, methods=["POST"]),
        Route("/api/v1/nodes", nodes),
        Route("/", _index),
        Mount("/static", app=StaticFiles(directory=_static_dir()), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _on_api_error, HTTPException: _on_http_error},
    )
    app.router.redirect_slashes = False  # /api/v1/jobs/ is a JSON 404, not a redirect
    return RequestGuard(app, d.token, loopback=loopback)


async def _read_body(request: Request) -> bytes:
    """The request's body, refused (413) past ``MAX_BODY_BYTES`` before more is read."""
    declared = request.headers.get("content-length", "")
    if (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > 12 or int(declared) > MAX_BODY_BYTES)
    ):
        raise _too_large()
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(raw)


def _too_large() -> ApiError:
    return ApiError(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes", "body")


async def _savepoint_body(request: Request) -> dict[str, Any]:
    raw = await _read_body(request)
    if not raw.strip():
        return {"cancel": False, "directory": None}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_body", f"the body is not JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", "the body must be a JSON object", "body")
    for name in body:
        if name not in ("cancel", "directory"):
            raise ApiError(400, "bad_body", f"unknown field {name!r}", name)
    cancel = body.get("cancel", False)
    if not isinstance(cancel, bool):
        raise ApiError(400, "bad_body", "cancel must be true or false", "cancel")
    directory = body.get("directory")
    if directory is not None and (
        not isinstance(directory, str) or not directory or not Path(directory).is_absolute()
    ):
        raise ApiError(400, "bad_body", "directory must be an absolute path or null", "directory")
    if directory is not None and "\0" in directory:
        raise ApiError(400, "bad_body", "directory must not contain NUL", "directory")
    return {"cancel": cancel, "directory": directory}


def _static_dir() -> str:
    return str(resources.files("mesh.coordinator.web") / "static")


async def _index(request: Request) -> Response:
    page = (Path(_static_dir()) / "index.html").read_bytes()
    return Response(page, media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.code, exc.message, exc.field)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    response = _error(exc.status_code, code, message)
    if exc.headers:  # 405's Allow
        response.headers.update(exc.headers)
    return response
