"""Peek on a real node of an in-process cluster: a ``PeekTask`` handed to the node's
message handler makes it send ``PeekSamples`` of what a running task emits (the
coordinator's side of peek is not there yet, so the test takes the samples from the
node's control connection before they leave)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.node.daemon import Node
from mesh.protocol.codec import Envelope
from mesh.protocol.messages import PeekSamples, PeekTask
from mesh.protocol.states import TaskState
from tests.helpers import poll_until, wait_for_state, write_job

# Task 0: the source and a map (chained); task 1, after the rebalance: a map and the sink.
JOB = """
    from mesh import Job, sinks, sources

    job = Job("peek", parallelism=1)
    (
        job.source(sources.Generator(lambda i: {"i": i}, rate=5000))
        .map(lambda r: {"i": r["i"], "square": r["i"] * r["i"]})
        .rebalance()
        .map(lambda r: {**r, "seen": True})
        .sink(sinks.JsonLines("out"))
    )
"""


@dataclass
class PeekedNode:
    """A one-node cluster running ``JOB``, and the samples its node sends."""

    node: Node
    job_id: str
    attempt: int
    samples: anyio.abc.ObjectReceiveStream[PeekSamples]
    client: Any

    async def peek(self, task: int, max_per_second: int = 20, lease_ms: int = 60_000) -> None:
        """Hand the node a PeekTask, as the coordinator would send it."""
        await self.node._on_message(
            Envelope(PeekTask(self.job_id, self.attempt, task, max_per_second, lease_ms))
        )

    async def next_records(self, subtask: str) -> list[Any]:
        with anyio.fail_after(10):
            samples = await self.samples.receive()
        assert (samples.job_id, samples.attempt, samples.subtask) == (
            self.job_id,
            self.attempt,
            subtask,
        )
        records: list[Any] = orjson.loads(samples.records)
        return records


@asynccontextmanager
async def peeked_node(cluster: Any, tmp_path: Path, monkeypatch: Any) -> AsyncIterator[PeekedNode]:
    node = cluster.nodes[0].daemon
    control = node._control
    send = control.send_nowait
    to_test, samples = anyio.create_memory_object_stream[PeekSamples](100)

    def capture(msg: Any) -> None:
        if isinstance(msg, PeekSamples):
            to_test.send_nowait(msg)
        else:
            send(msg)

    # The node's subtasks send their control messages through this (bound at deploy).
    monkeypatch.setattr(control, "send_nowait", capture)
    job_file = write_job(tmp_path, JOB)
    async with open_client(cluster.address) as client:
        job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
        status = await wait_for_state(client, job_id, ("RUNNING",))

        def subtasks_running() -> bool:  # on the node: the job's RUNNING comes first
            runtime = node.jobs.get(job_id)
            return runtime is not None and all(
                runner.state is TaskState.RUNNING for runner in runtime.runners.values()
            )

        await poll_until(subtasks_running, timeout_s=10, what="the subtasks running on the node")
        with to_test, samples:
            yield PeekedNode(node, job_id, status["attempt"], samples, client)
        if (await client.status(job_id))["state"] != "CANCELED":
            await client.cancel(job_id)
            await wait_for_state(client, job_id, ("CANCELED",))


@pytest.mark.asyncio
async def test_a_node_sends_samples_of_what_a_task_emits_until_told_to_stop(
    inprocess_cluster, tmp_path: Path, monkeypatch
) -> None:
    async with (
        inprocess_cluster(nodes=1, slots=2) as cluster,
        peeked_node(cluster, tmp_path, monkeypatch) as peeked,
    ):
        runtime = peeked.node.jobs[peeked.job_id]
        await peeked.peek(task=0, max_per_second=20)
        first = await peeked.next_records("0.0")
        second = await peeked.next_records("0.0")
        for records in (first, second):
            # The source chain's output (after its map), a few at a time, in order.
            assert 1 <= len(records) <= 20
            assert all(r == {"i": r["i"], "square": r["i"] ** 2} for r in records)
        numbers = [r["i"] for r in first + second]
        assert numbers == sorted(set(numbers))

        await peeked.peek(task=0, lease_ms=0)  # stop now
        assert runtime._peeks is not None and runtime._peeks.peeking == []
        assert runtime.runners["0.0"]._chain.peek is None  # the tap is gone


@pytest.mark.asyncio
async def test_a_sink_task_shows_what_its_sink_receives(
    inprocess_cluster, tmp_path: Path, monkeypatch
) -> None:
    async with (
        inprocess_cluster(nodes=1, slots=2) as cluster,
        peeked_node(cluster, tmp_path, monkeypatch) as peeked,
    ):
        await peeked.peek(task=1, max_per_second=5)
        records = await peeked.next_records("1.0")
        assert 1 <= len(records) <= 5
        assert all(r == {"i": r["i"], "square": r["i"] ** 2, "seen": True} for r in records)


@pytest.mark.asyncio
async def test_a_peek_at_what_does_not_run_here_is_ignored_quietly(
    inprocess_cluster, tmp_path: Path, monkeypatch
) -> None:
    async with (
        inprocess_cluster(nodes=1, slots=2) as cluster,
        peeked_node(cluster, tmp_path, monkeypatch) as peeked,
    ):
        node = peeked.node
        drops = node._network.drops.total
        await node._on_message(Envelope(PeekTask("no-such-job", 1, 0, 10, 60_000)))
        await node._on_message(Envelope(PeekTask(peeked.job_id, peeked.attempt + 1, 0, 10, 60_000)))
        await peeked.peek(task=7)
        runtime = node.jobs[peeked.job_id]
        assert runtime._peeks is not None and runtime._peeks.peeking == []
        assert node._network.drops.total == drops  # not counted as a dropped message


@pytest.mark.asyncio
async def test_a_cancelled_job_stops_its_peek(
    inprocess_cluster, tmp_path: Path, monkeypatch
) -> None:
    async with (
        inprocess_cluster(nodes=1, slots=2) as cluster,
        peeked_node(cluster, tmp_path, monkeypatch) as peeked,
    ):
        runtime = peeked.node.jobs[peeked.job_id]
        await peeked.peek(task=0)
        await peeked.next_records("0.0")
        await peeked.client.cancel(peeked.job_id)
        await wait_for_state(peeked.client, peeked.job_id, ("CANCELED",))
        assert runtime._peeks is None  # the attempt ended, its peeks with it
        assert all(runner._chain.peek is None for runner in runtime.runners.values())
