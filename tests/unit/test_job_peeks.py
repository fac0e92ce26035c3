"""A job attempt's peeks on a manual clock: which subtasks a PeekTask taps, when the
samples go out, and when a peek ends (lease, zero lease, subtask end, attempt end)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest

from mesh.node.runtime.chain import PeekTap
from mesh.node.runtime.peeking import FLUSH_INTERVAL_MS, JobPeeks
from mesh.protocol.messages import PeekSamples
from mesh.protocol.states import TaskState
from mesh.time.clock import ManualClock


class Subtask:
    """What JobPeeks needs of a subtask runner: its state and its chain's tap."""

    def __init__(self, state: TaskState = TaskState.RUNNING) -> None:
        self.state = state
        self.tap: PeekTap | None = None

    def set_peek(self, tap: PeekTap | None) -> None:
        self.tap = tap

    def emit(self, batch: list[Any]) -> None:
        """What Chain.push does with a batch it hands on."""
        if self.tap is not None:
            self.tap(batch)


class Peeks:
    def __init__(self, peeks: JobPeeks, clock: ManualClock, sent: list[PeekSamples]) -> None:
        self.peeks = peeks
        self.clock = clock
        self.sent = sent

    async def advance(self, ms: float) -> list[tuple[str, list[Any]]]:
        """Move the clock (once every task waits); what was sent meanwhile, as
        (subtask, records)."""
        await anyio.wait_all_tasks_blocked()
        self.clock.advance(ms)
        await anyio.wait_all_tasks_blocked()
        sent = [(s.subtask, orjson.loads(s.records)) for s in self.sent]
        self.sent.clear()
        return sent


@asynccontextmanager
async def job_peeks(runners: dict[str, Subtask]) -> AsyncIterator[Peeks]:
    clock = ManualClock(start_ms=1_000_000)
    sent: list[PeekSamples] = []

    def send(msg: Any) -> None:
        assert isinstance(msg, PeekSamples) and (msg.job_id, msg.attempt) == ("job-1", 3)
        sent.append(msg)

    async with anyio.create_task_group() as tg:
        peeks = JobPeeks(
            tg,
            job_id="job-1",
            attempt=3,
            clock=clock,
            runners=runners,
            send=send,  # type: ignore[arg-type]
        )
        yield Peeks(peeks, clock, sent)
        peeks.close()


@pytest.mark.asyncio
async def test_it_taps_the_running_subtasks_of_the_task_and_flushes_each_interval() -> None:
    runners = {
        "1.0": Subtask(),
        "1.1": Subtask(),
        "1.2": Subtask(TaskState.ENDING),
        "2.0": Subtask(),
    }
    async with job_peeks(runners) as p:
        assert p.peeks.ask(1, max_per_second=100, lease_ms=10_000) == ["1.0", "1.1"]
        assert [s for s, r in runners.items() if r.tap is not None] == ["1.0", "1.1"]
        runners["1.0"].emit(["a", "b"])  # the first record at once, then 1 per 10 ms
        runners["2.0"].emit(["not", "peeked"])
        assert await p.advance(FLUSH_INTERVAL_MS - 1) == []  # not yet
        assert await p.advance(1) == [("1.0", ["a"])]
        assert await p.advance(FLUSH_INTERVAL_MS) == []  # nothing taken: nothing sent
        runners["1.1"].emit(list(range(100)))
        runners["1.0"].emit(["c"])
        # 1.1's bucket filled meanwhile: a quarter second's worth, spread over the batch.
        assert await p.advance(FLUSH_INTERVAL_MS) == [
            ("1.0", ["c"]),
            ("1.1", list(range(0, 100, 4))),
        ]


@pytest.mark.asyncio
async def test_a_peek_ends_with_its_lease_and_what_it_took_after_the_last_flush() -> None:
    runners = {"0.0": Subtask()}
    async with job_peeks(runners) as p:
        p.peeks.ask(0, max_per_second=10, lease_ms=600)
        runners["0.0"].emit(["first"])
        assert await p.advance(FLUSH_INTERVAL_MS) == [("0.0", ["first"])]
        await p.advance(FLUSH_INTERVAL_MS)
        runners["0.0"].emit(["late"])  # at 500 ms: still within the lease
        assert await p.advance(FLUSH_INTERVAL_MS) == []  # at 750 ms: expired, dropped
        assert p.peeks.peeking == [] and runners["0.0"].tap is None


@pytest.mark.asyncio
async def test_asking_again_renews_the_lease_and_zero_stops_at_once() -> None:
    runners = {"0.0": Subtask()}
    async with job_peeks(runners) as p:
        p.peeks.ask(0, max_per_second=10, lease_ms=300)
        await p.advance(FLUSH_INTERVAL_MS)
        p.peeks.ask(0, max_per_second=10, lease_ms=600)  # now until 850 ms
        assert await p.advance(FLUSH_INTERVAL_MS) == []
        runners["0.0"].emit(["renewed"])  # at 500 ms: past the first lease
        assert await p.advance(FLUSH_INTERVAL_MS) == [("0.0", ["renewed"])]
        runners["0.0"].emit(["x"] * 10)
        assert p.peeks.ask(0, max_per_second=10, lease_ms=0) == ["0.0"]
        assert p.peeks.peeking == [] and runners["0.0"].tap is None
        assert await p.advance(FLUSH_INTERVAL_MS) == []  # what it took went with it


@pytest.mark.asyncio
async def test_a_subtask_that_ends_sends_what_it_took_at_once() -> None:
    runners = {"0.0": Subtask(), "0.1": Subtask()}
    async with job_peeks(runners) as p:
        p.peeks.ask(0, max_per_second=10, lease_ms=10_000)
        runners["0.0"].emit([{"final": 1}])
        runners["0.0"].state = TaskState.FINISHED
        p.peeks.subtask_ended("0.0")
        assert await p.advance(0) == [("0.0", [{"final": 1}])]
        assert p.peeks.peeking == ["0.1"] and runners["0.0"].tap is None


@pytest.mark.asyncio
async def test_the_flusher_runs_only_while_a_peek_does() -> None:
    runners = {"0.0": Subtask()}
    async with job_peeks(runners) as p:
        assert p.peeks.ask(3, max_per_second=10, lease_ms=10_000) == []  # no such task
        assert p.peeks._flusher is None
        p.peeks.ask(0, max_per_second=10, lease_ms=10_000)
        assert p.peeks._flusher is not None
        p.peeks.ask(0, max_per_second=10, lease_ms=0)
        assert p.peeks._flusher is None
        # Started again after it was stopped, before its task even saw the cancel.
        p.peeks.ask(0, max_per_second=10, lease_ms=10_000)
        runners["0.0"].emit(["again"])
        assert await p.advance(FLUSH_INTERVAL_MS) == [("0.0", ["again"])]
        p.peeks.close()
        assert p.peeks.peeking == [] and p.peeks._flusher is None and runners["0.0"].tap is None


class BrokenBatch(list):
    def __len__(self) -> int:
        raise RuntimeError("broken")


@pytest.mark.asyncio
async def test_a_tap_that_fails_ends_its_peek_not_the_subtask() -> None:
    runners = {"0.0": Subtask()}
    async with job_peeks(runners) as p:
        p.peeks.ask(0, max_per_second=10, lease_ms=10_000)
        runners["0.0"].emit(BrokenBatch([1]))  # the sampler raises on it: logged
        assert p.peeks.peeking == [] and runners["0.0"].tap is None
