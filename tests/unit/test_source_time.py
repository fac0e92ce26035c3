"""A source subtask's event time, driven by a manual clock: periodic watermarks, going
idle after ``idle_timeout`` and waking up again (a real ``SubtaskRunner`` writing into a
real local channel; no sockets)."""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import orjson

from mesh.graph.logical import OperatorSpec, Partitioning
from mesh.node.connectors.readers import SourceReader
from mesh.node.runtime.output import EdgeWriter
from mesh.node.runtime.task import CheckpointTarget
from mesh.testing.runner import standalone_runner as SubtaskRunner
from mesh.time.clock import ManualClock
from mesh.transport.frames import FrameKind
from tests.unit.test_channels import wire

SPEC = OperatorSpec(id=0, uid="src", name="src", kind="source", parallelism=1, max_parallelism=8)
SINK = OperatorSpec(id=1, uid="next", name="next", kind="map", parallelism=1, max_parallelism=8)


class LiveReader(SourceReader):
    """A live source: hands out the batches the test queues, ``[]`` when it has none."""

    def __init__(self) -> None:
        self.queue: deque[list[Any]] = deque()

    async def read(self, max_records: int) -> list[Any] | None:
        if self.queue:
            return self.queue.popleft()
        await anyio.sleep(0.001)  # a live source returns [] now and then, like ZmqPull
        return []


async def _frames(gate: Any, clock: ManualClock, want: int) -> list[tuple[str, Any]]:
    """The next ``want`` frames, moving the clock on while waiting for them."""
    got: list[tuple[str, Any]] = []
    with anyio.fail_after(5):
        while len(got) < want:
            with anyio.move_on_after(0.01):
                item = await gate.next()
                channel, kind, arg, raw = item
                if kind is FrameKind.DATA:
                    got.append(("data", orjson.loads(raw)["t"]))
                    gate.consumed(channel)
                elif kind is FrameKind.WATERMARK:
                    got.append(("watermark", arg))
                elif kind is FrameKind.WATERMARK_STATUS:
                    got.append(("idle" if arg else "active", None))
                continue
            clock.advance(50)  # nothing came: let time pass
    return got


def test_a_source_sends_watermarks_goes_idle_and_wakes_up() -> None:
    clock = ManualClock(0)
    wiring = wire([0], exclusive=4)
    writer = EdgeWriter(
        producer=SPEC,
        consumer=SINK,
        partitioning=Partitioning.FORWARD,
        channels=[wiring.outs[0]],
        subtask_index=0,
        buffer_records=100,
        timed=True,
    )
    reader = LiveReader()
    runner = SubtaskRunner(
        name="src",
        operators=[],
        writers=[writer],
        clock=clock,
        buffer_timeout_ms=10,
        read_batch=100,
        subtask_index=0,
        parallelism=1,
        max_parallelism=8,
        checkpoints=CheckpointTarget(ack=lambda *a: None, decline=lambda *a: None),
        reader=reader,
        source_spec=SPEC,
        timestamp=lambda r: r["ts"],
        max_delay_ms=100,
        idle_timeout_ms=1000,
        watermark_interval_ms=200,
    )

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            reader.queue.append([{"ts": 5_000}, {"ts": 4_950}])
            # The records, then the watermark they allow (behind them).
            assert await _frames(wiring.gate, clock, 2) == [
                ("data", [5_000, 4_950]),
                ("watermark", 5_000 - 100 - 1),
            ]
            # Silence: after idle_timeout the source says it is idle (once).
            assert await _frames(wiring.gate, clock, 1) == [("idle", None)]
            assert clock.now_ms() >= 1_000
            # A record wakes it up: "active" goes before the record.
            reader.queue.append([{"ts": 6_000}])
            assert await _frames(wiring.gate, clock, 3) == [
                ("active", None),
                ("data", [6_000]),
                ("watermark", 6_000 - 100 - 1),
            ]
            tg.cancel_scope.cancel()

    anyio.run(scenario)
