"""Same-node channels (mesh/node/channels.py), wired as JobRuntime.prepare wires them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import anyio
import orjson
import pytest

from mesh.errors import ChannelError
from mesh.node.dataplane.channels import (
    InputChannel,
    InputGate,
    LocalCreditReturn,
    LocalLink,
    OutputChannel,
)
from mesh.transport.frames import FrameKind

DATA = FrameKind.DATA
EOP = FrameKind.END_OF_PARTITION
TIMEOUT = 5


@dataclass
class Wiring:
    gate: InputGate
    outs: dict[int, OutputChannel]

    def input(self, channel_id: int) -> InputChannel:
        return self.gate.channels[channel_id]


def label_of(channel_id: int) -> str:
    return f"job-1#{channel_id} (map {channel_id} -> sink 0)"


def peer_of(channel_id: int) -> str:
    return f"local subtask 0.{channel_id}"


def wire(channel_ids: list[int], *, exclusive: int, floating: int = 0) -> Wiring:
    """One consumer gate fed by one local producer channel per id (see job.py prepare)."""
    gate = InputGate(exclusive=exclusive, floating=floating)
    for ch_id in channel_ids:
        # The credit return is set once the producer's channel exists.
        gate.add_channel(ch_id, None, label=label_of(ch_id), peer=peer_of(ch_id))  # type: ignore[arg-type]
    outs = {}
    for ch_id in channel_ids:
        out = OutputChannel(ch_id, exclusive, LocalLink(gate.channels[ch_id]), label_of(ch_id))
        gate.channels[ch_id].credit_return = LocalCreditReturn(out)
        outs[ch_id] = out
    gate.seal()
    return Wiring(gate, outs)


def payload(*records: object) -> bytes:
    return orjson.dumps(list(records))


async def next_frame(gate: InputGate) -> tuple[int, FrameKind, int, object]:
    """The next frame as ``(channel id, kind, arg, decoded payload or None)``."""
    item = await gate.next()
    assert item is not None, "gate ended unexpectedly"
    channel, kind, arg, raw = item
    return channel.id, kind, arg, orjson.loads(raw) if kind is DATA else None


async def read_all(gate: InputGate) -> dict[int, list[object]]:
    """Consume every DATA buffer until the gate ends; records per channel, in order."""
    records: dict[int, list[object]] = {ch: [] for ch in gate.channels}
    while (item := await gate.next()) is not None:
        channel, kind, _arg, raw = item
        if kind is DATA:
            records[channel.id].extend(orjson.loads(raw))
            gate.consumed(channel)
    return records


# -- ordering and end of partition -------------------------------------------------------


@pytest.mark.asyncio
async def test_records_arrive_in_order_per_channel() -> None:
    w = wire([3, 8], exclusive=2, floating=1)
    # Far more buffers than credit: most wait in the producers' ledgers.
    for i in range(20):
        w.outs[3].send_data(payload(f"a{i}"))
        w.outs[8].send_data(payload(f"b{i}", f"b{i}'"))
    assert w.outs[3].backlog > 0
    assert w.outs[8].backlog > 0
    for out in w.outs.values():
        out.send_event(EOP)
    with anyio.fail_after(TIMEOUT):
        records = await read_all(w.gate)
    assert records[3] == [f"a{i}" for i in range(20)]
    assert records[8] == [r for i in range(20) for r in (f"b{i}", f"b{i}'")]
    assert w.gate.finished
    for out in w.outs.values():
        assert out.end_acked.is_set()
        assert out.backlog == 0


@pytest.mark.asyncio
async def test_concurrent_producers_with_backpressure_deliver_everything_in_order() -> None:
    w = wire([0, 1, 2], exclusive=1, floating=2)
    counts = {0: 40, 1: 5, 2: 25}

    async def produce(ch: int) -> None:
        out = w.outs[ch]
        for i in range(counts[ch]):
            out.send_data(payload([ch, i]))
            await out.wait_backlog_below(2)
            assert out.backlog < 2
        out.send_event(EOP)
        await out.end_acked.wait()

    records: dict[int, list[object]] = {}

    async def consume() -> None:
        records.update(await read_all(w.gate))

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for ch in counts:
                tg.start_soon(produce, ch)
            tg.start_soon(consume)
    for ch, n in counts.items():
        assert records[ch] == [[ch, i] for i in range(n)]


@pytest.mark.asyncio
async def test_frames_from_ready_channels_are_handed_out_round_robin() -> None:
    w = wire([0, 1], exclusive=3)
    for i in range(3):
        w.outs[0].send_data(payload(f"a{i}"))
    for i in range(3):
        w.outs[1].send_data(payload(f"b{i}"))
    order = []
    with anyio.fail_after(TIMEOUT):
        for _ in range(6):
            ch, kind, _, records = await next_frame(w.gate)
            assert kind is DATA
            order.append((ch, records))
    assert order == [
        (0, ["a0"]),
        (1, ["b0"]),
        (0, ["a1"]),
        (1, ["b1"]),
        (0, ["a2"]),
        (1, ["b2"]),
    ]


@pytest.mark.asyncio
async def test_end_of_partition_is_acknowledged_when_handed_out() -> None:
    w = wire([5], exclusive=2)
    out = w.outs[5]
    out.send_data(payload(1))
    out.send_event(EOP)
    # Delivered into the gate, but the consumer has not reached it yet.
    assert not out.end_acked.is_set()
    assert not w.gate.finished
    with anyio.fail_after(TIMEOUT):
        assert await next_frame(w.gate) == (5, DATA, 0, [1])
        w.gate.consumed(w.input(5))
        assert not out.end_acked.is_set()
        # END_OF_PARTITION is acknowledged when handed out (alignment counts it as a
        # barrier), then the gate ends.
        assert await next_frame(w.gate) == (5, EOP, 0, None)
        assert out.end_acked.is_set()
        assert await w.gate.next() is None
    assert w.gate.finished
    with anyio.fail_after(TIMEOUT):
        assert await w.gate.next() is None  # stays ended


@pytest.mark.asyncio
async def test_end_of_partition_waits_behind_data_without_credit() -> None:
    w = wire([0], exclusive=1)
    out = w.outs[0]
    out.send_data(payload("x"))
    out.send_data(payload("y"))  # no credit: queued
    out.send_event(EOP)  # free, but must not overtake "y"
    assert out.backlog == 1
    assert len(w.input(0).queue) == 1
    with anyio.fail_after(TIMEOUT):
        records = await read_all(w.gate)
    assert records == {0: ["x", "y"]}
    assert out.end_acked.is_set()


def test_data_after_end_of_partition_is_refused_by_the_producer() -> None:
    w = wire([4], exclusive=1)
    w.outs[4].send_event(EOP)
    with pytest.raises(ChannelError, match=re.escape(f"channel {label_of(4)}: data after END_OF")):
        w.outs[4].send_data(payload(1))


@pytest.mark.asyncio
async def test_gate_ends_only_after_every_channel_ended() -> None:
    w = wire([0, 1], exclusive=1)
    w.outs[0].send_event(EOP)
    result: list[object] = []

    async def read() -> None:
        while (item := await w.gate.next()) is not None:
            result.append(item[0].id)
        result.append(None)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            # Channel 0 ended (and was acknowledged) but channel 1 has not: keep waiting.
            assert result == [0]
            assert w.outs[0].end_acked.is_set()
            assert not w.gate.finished
            w.outs[1].send_event(EOP)
    assert result == [0, 1, None]
    assert w.outs[1].end_acked.is_set()
    assert w.gate.finished


@pytest.mark.asyncio
async def test_events_carry_their_argument_and_cost_no_credit() -> None:
    w = wire([0], exclusive=1)
    out = w.outs[0]
    out.send_data(payload(1))
    assert out.credit == 0
    out.send_event(FrameKind.WATERMARK, 1_700_000_000_123)
    out.send_event(FrameKind.BARRIER, 9)
    assert out.credit == 0
    with anyio.fail_after(TIMEOUT):
        assert await next_frame(w.gate) == (0, DATA, 0, [1])
        assert await next_frame(w.gate) == (0, FrameKind.WATERMARK, 1_700_000_000_123, None)
        assert await next_frame(w.gate) == (0, FrameKind.BARRIER, 9, None)


# -- credit and backpressure -------------------------------------------------------------


@pytest.mark.asyncio
async def test_backlog_drains_as_the_consumer_returns_credit() -> None:
    w = wire([0], exclusive=2)
    out = w.outs[0]
    for i in range(5):
        out.send_data(payload(i))
    assert (out.credit, out.backlog) == (0, 3)
    assert len(w.input(0).queue) == 2
    seen = []
    with anyio.fail_after(TIMEOUT):
        for _ in range(5):
            _, kind, backlog, records = await next_frame(w.gate)
            assert kind is DATA
            # Until the consumer is done with the buffer, no credit goes back.
            before = out.backlog
            w.gate.consumed(w.input(0))
            seen.append((records, backlog, before, out.backlog))
    # (records, backlog the sender reported, producer backlog before/after consumed()).
    assert seen == [
        ([0], 0, 3, 2),
        ([1], 0, 2, 1),
        ([2], 2, 1, 0),
        ([3], 1, 0, 0),
        ([4], 0, 0, 0),
    ]
    assert out.credit == 2  # both exclusive credits are back


@pytest.mark.asyncio
async def test_floating_credit_lets_a_busy_channel_send_more() -> None:
    w = wire([0], exclusive=1, floating=2)
    out = w.outs[0]
    for i in range(6):
        out.send_data(payload(i))
    # One exclusive plus two floating slots: three buffers went out.
    assert len(w.input(0).queue) == 3
    assert (out.credit, out.backlog) == (0, 3)
    with anyio.fail_after(TIMEOUT):
        out.send_event(EOP)
        assert await read_all(w.gate) == {0: list(range(6))}


@pytest.mark.asyncio
async def test_wait_backlog_below_blocks_until_credit_arrives() -> None:
    w = wire([0], exclusive=1)
    out = w.outs[0]
    for i in range(4):
        out.send_data(payload(i))
    assert out.backlog == 3
    done = anyio.Event()

    async def wait_for_room() -> None:
        await out.wait_backlog_below(2)
        done.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_room)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            # One credit back: backlog 2, still not below 2.
            await next_frame(w.gate)
            w.gate.consumed(w.input(0))
            assert out.backlog == 2
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            # Another: backlog 1 < 2, the producer may go on.
            await next_frame(w.gate)
            w.gate.consumed(w.input(0))
            await done.wait()
    assert out.backlog == 1


@pytest.mark.asyncio
async def test_wait_backlog_below_returns_at_once_when_there_is_room() -> None:
    w = wire([0], exclusive=1)
    out = w.outs[0]
    out.send_data(payload(1))
    out.send_data(payload(2))
    assert out.backlog == 1
    with anyio.fail_after(TIMEOUT):
        await out.wait_backlog_below(2)


@pytest.mark.asyncio
async def test_channel_without_credit_does_not_block_another_channel() -> None:
    w = wire([0, 1], exclusive=1)
    stuck, free = w.outs[0], w.outs[1]
    for i in range(3):
        stuck.send_data(payload(f"s{i}"))
    assert (stuck.credit, stuck.backlog) == (0, 2)
    with anyio.fail_after(TIMEOUT):
        # The consumer takes the stuck channel's buffer but does not finish with it.
        assert await next_frame(w.gate) == (0, DATA, 0, ["s0"])
        for i in range(5):
            free.send_data(payload(f"f{i}"))
            assert await next_frame(w.gate) == (1, DATA, 0, [f"f{i}"])
            w.gate.consumed(w.input(1))
        assert (stuck.credit, stuck.backlog) == (0, 2)
        # Once the stuck buffer is done, the stuck channel moves again.
        w.gate.consumed(w.input(0))
        assert stuck.backlog == 1
        assert await next_frame(w.gate) == (0, DATA, 1, ["s1"])


@pytest.mark.asyncio
async def test_channel_holding_all_floating_credit_does_not_block_another_channel() -> None:
    w = wire([0, 1], exclusive=1, floating=2)
    greedy, other = w.outs[0], w.outs[1]
    for i in range(10):
        greedy.send_data(payload(f"g{i}"))
    assert len(w.input(0).queue) == 3  # exclusive + the whole floating pool
    assert greedy.backlog == 7
    # Nobody consumes the greedy channel; the other one still gets its exclusive credit.
    with anyio.fail_after(TIMEOUT):
        for i in range(4):
            other.send_data(payload(f"o{i}"))
            while (frame := await next_frame(w.gate))[0] == 0:
                pass  # taken from the gate, never consumed
            assert frame == (1, DATA, 0, [f"o{i}"])
            w.gate.consumed(w.input(1))
    assert greedy.backlog == 7
    assert other.backlog == 0


@pytest.mark.asyncio
async def test_end_of_partition_frees_floating_credit_for_a_waiting_channel() -> None:
    w = wire([0, 1], exclusive=2, floating=1)
    ending, waiting = w.outs[0], w.outs[1]
    # Channel 0 takes the only floating slot (to refill to `exclusive`), then ends.
    ending.send_data(payload("e"))
    ending.send_event(EOP)
    assert ending.credit == 2
    # Channel 1 has backlog and no floating slot left for it.
    for i in range(4):
        waiting.send_data(payload(f"w{i}"))
    assert waiting.backlog == 2
    with anyio.fail_after(TIMEOUT):
        assert await next_frame(w.gate) == (0, DATA, 0, ["e"])
        assert await next_frame(w.gate) == (1, DATA, 0, ["w0"])
        # Handing out END_OF_PARTITION frees channel 0's unused floating credit, which
        # goes to channel 1 at once: one more of its buffers is sent.
        assert await next_frame(w.gate) == (0, EOP, 0, None)
        assert await next_frame(w.gate) == (1, DATA, 0, ["w1"])
        assert ending.end_acked.is_set()
        assert waiting.backlog == 1
        assert await next_frame(w.gate) == (1, DATA, 1, ["w2"])


def test_discard_drops_what_waits_for_credit() -> None:
    w = wire([0], exclusive=1)
    out = w.outs[0]
    for i in range(4):
        out.send_data(payload(i))
    out.discard()
    assert out.backlog == 0
    assert len(w.input(0).queue) == 1


# -- broken channels ---------------------------------------------------------------------


def failures_of(gate: InputGate) -> list[BaseException]:
    failures: list[BaseException] = []
    gate.on_failure = failures.append
    return failures


@pytest.mark.asyncio
async def test_sequence_gap_fails_the_gate() -> None:
    w = wire([2], exclusive=2)
    failures = failures_of(w.gate)
    w.input(2).deliver(DATA, 1, 0, payload("skipped seq 0"))
    assert len(failures) == 1
    message = f"channel {label_of(2)} from {peer_of(2)}: sequence gap (expected 0, got 1)"
    assert isinstance(failures[0], ChannelError)
    assert str(failures[0]) == message
    with anyio.fail_after(TIMEOUT), pytest.raises(ChannelError, match=re.escape(message)) as info:
        await w.gate.next()
    assert info.value is failures[0]


@pytest.mark.asyncio
async def test_duplicate_sequence_fails_the_gate() -> None:
    w = wire([2], exclusive=2)
    failures = failures_of(w.gate)
    w.outs[2].send_data(payload("first"))  # seq 0
    w.input(2).deliver(DATA, 0, 0, payload("first again"))
    message = (
        f"channel {label_of(2)} from {peer_of(2)}: sequence duplicate or reordered "
        "(expected 1, got 0)"
    )
    assert [str(f) for f in failures] == [message]
    # The failure wins over the buffer still queued.
    with anyio.fail_after(TIMEOUT), pytest.raises(ChannelError, match=re.escape(message)):
        await w.gate.next()


@pytest.mark.asyncio
async def test_failure_wakes_a_waiting_consumer_and_is_reported_once() -> None:
    w = wire([0, 1], exclusive=1)
    failures = failures_of(w.gate)
    raised: list[BaseException] = []

    async def read() -> None:
        try:
            await w.gate.next()
        except ChannelError as exc:
            raised.append(exc)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            w.input(1).deliver(DATA, 7, 0, payload())
            w.input(0).deliver(DATA, 9, 0, payload())  # a second fault changes nothing
    assert len(failures) == 1
    assert raised == failures
    assert str(raised[0]).startswith(f"channel {label_of(1)} from {peer_of(1)}: sequence gap")
    # Frames after the failure are not queued.
    w.outs[0].send_data(payload("late"))
    assert not w.input(0).queue


@pytest.mark.asyncio
async def test_overdraft_fails_the_gate_naming_the_channel() -> None:
    w = wire([6], exclusive=1)
    failures = failures_of(w.gate)
    channel = w.input(6)
    channel.deliver(DATA, 0, 0, payload(1))
    assert failures == []
    channel.deliver(DATA, 1, 0, payload(2))  # the producer had only one credit
    assert len(failures) == 1
    assert re.fullmatch(
        re.escape(f"channel {label_of(6)} from {peer_of(6)}: ") + r".*sender overdraft.*",
        str(failures[0]),
    )
    with anyio.fail_after(TIMEOUT), pytest.raises(ChannelError, match="overdraft"):
        await w.gate.next()


@pytest.mark.asyncio
async def test_consuming_a_buffer_never_received_fails_the_gate() -> None:
    w = wire([0], exclusive=1)
    failures = failures_of(w.gate)
    w.gate.consumed(w.input(0))
    assert len(failures) == 1
    assert "consumed a buffer that was never queued" in str(failures[0])
    with anyio.fail_after(TIMEOUT), pytest.raises(ChannelError, match="never queued"):
        await w.gate.next()
