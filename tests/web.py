"""Helpers for tests of the coordinator's HTTP face: a plain HTTP client (stdlib), and a
coordinator serving HTTP with a running job."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from mesh.client.client import open_client, prepare_submission
from mesh.client.local_cluster import LocalCluster
from tests.helpers import wait_for_state, write_job

__all__ = ["GENERATOR_JOB", "HttpReply", "ServedJob", "http", "serving_cluster"]

#: A job that runs until cancelled: a generator at a steady rate, a keyed sum, a file
#: sink (two tasks of parallelism 2, a hash edge between them), checkpoints every 500 ms.
GENERATOR_JOB = """
    from mesh import Job, sinks, sources

    job = Job("dashboard-demo", parallelism=2, checkpoint_interval="500ms")
    (
        job.source(sources.Generator(lambda i: {{"user": i % 7, "n": i}}, rate={rate}))
        .uid("events")
        .map(lambda e: {{**e, "double": e["n"] * 2}})
        .uid("double")
        .key_by(lambda e: e["user"])
        .sum("n")
        .uid("sum")
        .sink(sinks.JsonLines("{out}"))
        .uid("out")
    )
"""


@dataclass(frozen=True)
class HttpReply:
    """One answer: status, headers (lower-case names), and the body (JSON decoded when
    it is JSON)."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        """The body as JSON."""
        return json.loads(self.raw)


def http(
    base: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> HttpReply:
    """One request to ``base + path``; any status is returned, never raised."""
    request = urllib.request.Request(base.rstrip("/") + path, data=body, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if body is not None and "Content-Type" not in (headers or {}):
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return HttpReply(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class ServedJob:
    """A cluster whose coordinator serves HTTP, and a job running on it."""

    cluster: LocalCluster
    base: str  # like http://127.0.0.1:PORT
    job_id: str
    job_file: Path


@contextlib.contextmanager
def serving_cluster(
    directory: Path,
    *,
    job_source: str | None = None,
    rate: int = 2000,
    nodes: int = 2,
    slots: int = 2,
    coordinator_args: list[str] | None = None,
    keys: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[ServedJob]:
    """Start a cluster serving HTTP on a free loopback port, submit a job (by default
    ``GENERATOR_JOB``) and wait for it to run; everything stops on exit."""
    source = job_source or GENERATOR_JOB.format(rate=rate, out=directory / "out")
    job_file = write_job(directory, source, "served_job.py")
    key_args = ["--keys", str(keys)] if keys is not None else []
    cluster = LocalCluster(
        nodes=nodes,
        slots=slots,
        state_dir=directory / "cluster",
        log_level="debug" if os.environ.get("MESH_TEST_DEBUG") else "info",
        coordinator_args=["--http", "127.0.0.1:0", *key_args, *(coordinator_args or [])],
        node_args=key_args,
        env=env,
    )
    with cluster:
        assert cluster.http_url, "the coordinator did not say where it serves HTTP"

        async def submit() -> str:
            async with open_client(cluster.address, keys=keys) as client:
                job_id = await client.submit(prepare_submission(job_file, base_dir=directory))
                await wait_for_state(client, job_id, ("RUNNING",))
                return job_id

        # In a thread of its own: a browser test's Playwright runs an event loop here.
        with ThreadPoolExecutor(1) as pool:
            job_id = pool.submit(anyio.run, submit).result()
        yield ServedJob(cluster, cluster.http_url, job_id, job_file)
