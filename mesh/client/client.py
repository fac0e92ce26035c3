"""Talking to a coordinator from a client (the CLI, tests, notebooks)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from mesh.api.loader import load_job
from mesh.client.bundle import make_bundle
from mesh.errors import RemoteError
from mesh.graph.logical import LogicalGraph
from mesh.protocol.messages import (
    Ack,
    AwaitJobEnd,
    CancelJob,
    CheckpointList,
    CollectedReply,
    FetchCollected,
    GetJobStatus,
    JobList,
    JobStatusReply,
    ListCheckpoints,
    ListJobs,
    ListNodes,
    NodeList,
    SavepointTaken,
    SubmitJob,
    SubmitReply,
    TakeSavepoint,
)
from mesh.transport.control import ControlConnection
from mesh.transport.curve import Curve
from mesh.transport.handshake import wait_handshake
from mesh.transport.sockets import SocketFactory, SocketKind

__all__ = [
    "DEFAULT_COORDINATOR",
    "CoordinatorClient",
    "build_graph",
    "open_client",
    "prepare_submission",
]

DEFAULT_COORDINATOR = "tcp://127.0.0.1:5550"


def prepare_submission(
    job_file: str | Path,
    *,
    job_name: str | None = None,
    parallelism: int | None = None,
    checkpoint_interval_ms: int | None = None,
    trace_sample: float | None = None,
    base_dir: str | Path | None = None,
    restore_from: str | Path | None = None,
    mode: str | None = None,
) -> SubmitJob:
    """Import the job file, build its graph, and pack it for submission."""
    graph, build_args = _build(
        job_file, job_name, parallelism, checkpoint_interval_ms, trace_sample, mode
    )
    bundle, entry = make_bundle(job_file)
    return SubmitJob(
        graph=graph.to_dict(),
        job_name=graph.config.name,
        entry=entry,
        build_args=build_args,
        base_dir=str(Path(base_dir or os.getcwd()).resolve()),
        bundle=bundle,
        restore_from=str(Path(restore_from).resolve()) if restore_from is not None else None,
    )


def build_graph(
    job_file: str | Path,
    *,
    job_name: str | None = None,
    parallelism: int | None = None,
    checkpoint_interval_ms: int | None = None,
) -> LogicalGraph:
    """Import the job file and build its logical graph, as a submission of it would."""
    graph, _ = _build(job_file, job_name, parallelism, checkpoint_interval_ms, None, None)
    return graph


def _build(
    job_file: str | Path,
    job_name: str | None,
    parallelism: int | None,
    checkpoint_interval_ms: int | None,
    trace_sample: float | None,
    mode: str | None,
) -> tuple[LogicalGraph, dict[str, Any]]:
    """The job's graph and the build arguments (overrides) it was built with."""
    job = load_job(job_file, job_name)
    build_args: dict[str, Any] = {}
    if parallelism is not None:
        build_args["parallelism"] = parallelism
    if checkpoint_interval_ms is not None:
        build_args["checkpoint_interval_ms"] = checkpoint_interval_ms
    if trace_sample is not None:
        build_args["trace_sample"] = trace_sample
    if mode is not None:
        build_args["mode"] = mode
    return job.build(**build_args).graph, build_args


class CoordinatorClient:
    """Requests to one coordinator."""

    def __init__(self, connection: ControlConnection, timeout_s: float) -> None:
        self._conn = connection
        self.timeout_s = timeout_s

    async def _request(self, msg: Any, expected: type[Any]) -> Any:
        reply = await self._conn.request(msg, timeout_s=self.timeout_s)
        if not isinstance(reply, expected):
            raise RemoteError(f"unexpected reply {type(reply).__name__} to {type(msg).__name__}")
        return reply

    async def submit(self, submission: SubmitJob) -> str:
        """Submit a job; returns its id."""
        return (await self.submit_job(submission)).job_id

    async def submit_job(self, submission: SubmitJob) -> SubmitReply:
        """Submit a job; the reply has its id and says why it waits for slots, if it does."""
        reply: SubmitReply = await self._request(submission, SubmitReply)
        return reply

    async def list_jobs(self) -> list[dict[str, Any]]:
        """One summary per job."""
        reply: JobList = await self._request(ListJobs(), JobList)
        return reply.jobs

    async def status(self, job_id: str) -> dict[str, Any]:
        """A job's status."""
        reply: JobStatusReply = await self._request(GetJobStatus(job_id=job_id), JobStatusReply)
        return reply.status

    async def await_end(self, job_id: str) -> dict[str, Any]:
        """A job's status once it has ended (waits as long as that takes)."""
        reply = await self._conn.request(AwaitJobEnd(job_id=job_id), timeout_s=None)
        if not isinstance(reply, JobStatusReply):
            raise RemoteError(f"unexpected reply {type(reply).__name__} to AwaitJobEnd")
        return reply.status

    async def cancel(self, job_id: str) -> str:
        """Ask the coordinator to cancel a job."""
        reply: Ack = await self._request(CancelJob(job_id=job_id), Ack)
        return reply.detail

    async def savepoint(
        self, job_id: str, *, directory: str | None = None, cancel: bool = False
    ) -> str:
        """Take a savepoint (and cancel the job after it); returns its path.

        ``directory`` should be absolute: the coordinator resolves it on its host.
        """
        msg = TakeSavepoint(job_id=job_id, directory=directory, cancel=cancel)
        reply = await self._conn.request(msg, timeout_s=max(self.timeout_s, 600.0))
        if not isinstance(reply, SavepointTaken):
            raise RemoteError(f"unexpected reply {type(reply).__name__} to a savepoint request")
        return reply.path

    async def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """A job's checkpoint and savepoint history, oldest first."""
        reply: CheckpointList = await self._request(ListCheckpoints(job_id=job_id), CheckpointList)
        return reply.checkpoints

    async def nodes(self) -> list[dict[str, Any]]:
        """One summary per registered node."""
        reply: NodeList = await self._request(ListNodes(), NodeList)
        return reply.nodes

    async def fetch_collected(self, job_id: str, offset: int) -> tuple[list[Any], int, bool]:
        """Records collected from ``offset`` on: (records, next offset, complete)."""
        reply: CollectedReply = await self._request(
            FetchCollected(job_id=job_id, offset=offset), CollectedReply
        )
        return orjson.loads(reply.records), reply.next_offset, reply.complete


@asynccontextmanager
async def open_client(
    address: str, *, timeout_s: float = 10.0, keys: str | Path | None = None
) -> AsyncIterator[CoordinatorClient]:
    """A client of the coordinator at ``address``, closed on exit.

    With ``keys`` (a keys directory) it uses the ``client`` pair and the coordinator's
    public key, and waits for the handshake: a coordinator that refuses the key raises
    ``HandshakeFailed`` saying so (ConfigError if a key file is missing).
    """
    curve = Curve.load(Path(keys), ["client"], serve=False) if keys is not None else None
    with SocketFactory(curve=curve) as factory:
        sock = factory.connect(
            SocketKind.DEALER, address, server=("coordinator",), watch_handshake=curve is not None
        )
        if curve is not None:
            await wait_handshake(sock, f"the coordinator at {address}", timeout_s=timeout_s)
        yield CoordinatorClient(ControlConnection(sock, peer=f"coordinator {address}"), timeout_s)
