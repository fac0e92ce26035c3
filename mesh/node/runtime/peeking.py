"""The peeks under way at one job attempt's subtasks on this node: the I/O around
``PeekSampler`` (``mesh.node.runtime.peek``).

``JobPeeks.ask`` starts, renews or stops the peek at the running local subtasks of a
task (a ``PeekTask``): each gets a sampler, and its chain a tap that offers the sampler
every batch it hands on. While any peek runs, a flusher drains every sampler each
``FLUSH_INTERVAL_MS`` into one ``PeekSamples`` per subtask that took something, sent
over the node's control connection, and drops the samplers whose lease ran out (with
what they took since their last flush). A subtask that ends sends what it took at once
and its peek stops; ``close`` (the attempt ended or was cancelled) stops them all. With
no peek left the flusher stops too: a job nobody peeks at has no peek task at all.

A peek must never fail a job: a tap or a flush that raises is logged and ends the peek.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from mesh.graph.execution import SubtaskRef
from mesh.node.runtime.chain import PeekTap
from mesh.node.runtime.peek import PeekSampler
from mesh.node.runtime.task import SubtaskRunner
from mesh.protocol.messages import PeekSamples
from mesh.protocol.states import TaskState
from mesh.time.clock import Clock

__all__ = ["FLUSH_INTERVAL_MS", "JobPeeks"]

log = logging.getLogger("mesh.node.peek")

#: How often what the samplers took goes to the coordinator (ms).
FLUSH_INTERVAL_MS = 250


class JobPeeks:
    """The peeks at one job attempt's local subtasks (see the module doc)."""

    def __init__(
        self,
        tg: anyio.abc.TaskGroup,
        *,
        job_id: str,
        attempt: int,
        clock: Clock,
        runners: Mapping[str, SubtaskRunner],
        send: Callable[[Any], None],
        flush_interval_ms: float = FLUSH_INTERVAL_MS,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._tg = tg  # the attempt's: the flusher ends with it at the latest
        self._clock = clock
        self._runners = runners  # every local subtask of the attempt, by "task.index"
        self._send = send  # to the coordinator; never blocks
        self._interval = flush_interval_ms
        # The sampler of each subtask a peek runs at; its chain is tapped exactly then.
        self._samplers: dict[str, PeekSampler] = {}
        # The running flusher's scope; None exactly when no flusher runs.
        self._flusher: anyio.CancelScope | None = None

    @property
    def peeking(self) -> list[str]:
        """The subtasks a peek runs at."""
        return list(self._samplers)

    def ask(self, task: int, max_per_second: int, lease_ms: int) -> list[str]:
        """A ``PeekTask`` for task ``task``: start or renew the peek at its running local
        subtasks (``lease_ms`` 0 or less: stop it); returns the subtasks it concerned."""
        if lease_ms <= 0:
            stopped = [s for s in self._samplers if SubtaskRef.parse(s).task == task]
            for subtask in stopped:
                self._stop(subtask)
            return stopped
        now = self._clock.monotonic_ms()
        chosen = [
            subtask
            for subtask, runner in self._runners.items()
            if SubtaskRef.parse(subtask).task == task and runner.state is TaskState.RUNNING
        ]
        for subtask in chosen:
            sampler = self._samplers.get(subtask)
            if sampler is not None:
                sampler.renew(max_per_second, lease_ms, now)
                continue
            sampler = self._samplers[subtask] = PeekSampler(max_per_second, lease_ms, now)
            self._runners[subtask].set_peek(self._tap(subtask, sampler))
        if self._samplers and self._flusher is None:
            self._flusher = anyio.CancelScope()
            self._tg.start_soon(self._flush_every_interval, self._flusher)
        return chosen

    def subtask_ended(self, subtask: str) -> None:
        """``subtask`` emits nothing more: send what its peek took now, and stop it."""
        sampler = self._samplers.get(subtask)
        if sampler is None:
            return
        if not sampler.expired(self._clock.monotonic_ms()):
            self._send_samples(subtask, sampler)
        self._stop(subtask)

    def flush(self) -> None:
        """Send what each sampler took since the last flush; drop the expired ones."""
        now = self._clock.monotonic_ms()
        for subtask, sampler in list(self._samplers.items()):
            if sampler.expired(now):
                self._stop(subtask)
            else:
                self._send_samples(subtask, sampler)

    def close(self) -> None:
        """Stop every peek, sending nothing more (the attempt is over)."""
        for subtask in list(self._samplers):
            self._stop(subtask)

    def _tap(self, subtask: str, sampler: PeekSampler) -> PeekTap:
        clock = self._clock

        def tap(batch: list[Any]) -> None:
            try:
                sampler.offer(batch, clock.monotonic_ms())
            except Exception:
                log.exception("peek at subtask %s of job %s failed", subtask, self.job_id)
                self._stop(subtask)

        return tap

    def _stop(self, subtask: str) -> None:
        if self._samplers.pop(subtask, None) is None:
            return
        self._runners[subtask].set_peek(None)
        if not self._samplers and self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None

    def _send_samples(self, subtask: str, sampler: PeekSampler) -> None:
        records = sampler.drain()
        if records is not None:
            self._send(
                PeekSamples(
                    job_id=self.job_id, attempt=self.attempt, subtask=subtask, records=records
                )
            )

    async def _flush_every_interval(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await self._clock.sleep_ms(self._interval)
                try:
                    self.flush()
                except Exception:
                    log.exception("sending peek samples of job %s failed", self.job_id)
                    self.close()
