"""Credit-based flow control (mesh/transport/credit.py): sender ledger and receiver gate.

The state machine at the bottom simulates one input gate fed by several channels, with a
FIFO "wire" per channel carrying frames forward and another carrying credit grants back,
and checks the invariants stated in the module docstring after every step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from mesh.errors import ChannelError
from mesh.transport.credit import CreditLedger, InputCredits, LedgerStats

# -- CreditLedger (sender side) ----------------------------------------------------------


def drain(ledger: CreditLedger[str]) -> list[tuple[str, int]]:
    """Everything the ledger lets go now, in order, with the reported backlog."""
    out = []
    while (item := ledger.pop_sendable()) is not None:
        out.append(item)
    return out


def test_ledger_starts_with_initial_credit_and_nothing_queued() -> None:
    ledger: CreditLedger[str] = CreditLedger(3)
    assert ledger.credit == 3
    assert ledger.backlog == 0
    assert ledger.queued == 0
    assert ledger.pop_sendable() is None
    assert ledger.statistics() == LedgerStats(credit=3, backlog=0, queued=0, granted=3, data_sent=0)


@pytest.mark.parametrize("initial", [0, -1, -100])
def test_ledger_rejects_non_positive_initial_credit(initial: int) -> None:
    with pytest.raises(ValueError, match=rf"initial credit must be >= 1, got {initial}"):
        CreditLedger(initial)


@pytest.mark.parametrize("credits", [0, -1])
def test_ledger_rejects_non_positive_credit_announcement(credits: int) -> None:
    ledger: CreditLedger[str] = CreditLedger(1)
    with pytest.raises(ChannelError, match=rf"must be positive, got {credits}"):
        ledger.add_credit(credits)
    # A rejected announcement changes nothing.
    assert ledger.statistics().granted == 1
    assert ledger.credit == 1


def test_ledger_spends_one_credit_per_data_buffer_and_stops_at_zero() -> None:
    ledger: CreditLedger[str] = CreditLedger(2)
    for name in ("d0", "d1", "d2"):
        ledger.offer(name, is_data=True)
    assert drain(ledger) == [("d0", 2), ("d1", 1)]
    assert ledger.credit == 0
    assert ledger.backlog == 1
    assert ledger.pop_sendable() is None
    ledger.add_credit(5)
    assert drain(ledger) == [("d2", 0)]
    assert ledger.statistics() == LedgerStats(credit=4, backlog=0, queued=0, granted=7, data_sent=3)


def test_ledger_reports_backlog_of_data_still_queued_behind_each_buffer() -> None:
    ledger: CreditLedger[str] = CreditLedger(10)
    ledger.offer("d0", is_data=True)
    ledger.offer("wm", is_data=False)
    ledger.offer("d1", is_data=True)
    ledger.offer("d2", is_data=True)
    assert ledger.backlog == 3  # events are not backlog
    assert ledger.queued == 4
    # Backlog counts data buffers behind the item just handed out.
    assert drain(ledger) == [("d0", 2), ("wm", 2), ("d1", 1), ("d2", 0)]


def test_events_never_overtake_data_waiting_for_credit() -> None:
    ledger: CreditLedger[str] = CreditLedger(1)
    ledger.offer("d0", is_data=True)
    ledger.offer("d1", is_data=True)
    ledger.offer("barrier", is_data=False)
    ledger.offer("d2", is_data=True)
    ledger.offer("eop", is_data=False)
    assert drain(ledger) == [("d0", 2)]
    # d1 needs credit; the barrier behind it must wait even though events are free.
    assert ledger.pop_sendable() is None
    assert ledger.queued == 4
    ledger.add_credit(1)
    assert drain(ledger) == [("d1", 1), ("barrier", 1)]
    ledger.add_credit(1)
    assert drain(ledger) == [("d2", 0), ("eop", 0)]


def test_events_at_the_head_go_without_credit() -> None:
    ledger: CreditLedger[str] = CreditLedger(1)
    ledger.offer("d0", is_data=True)
    assert drain(ledger) == [("d0", 0)]
    assert ledger.credit == 0
    ledger.offer("wm1", is_data=False)
    ledger.offer("wm2", is_data=False)
    assert drain(ledger) == [("wm1", 0), ("wm2", 0)]
    assert ledger.credit == 0
    assert ledger.statistics().data_sent == 1


def test_ledger_discard_drops_everything_queued() -> None:
    ledger: CreditLedger[str] = CreditLedger(1)
    for i in range(3):
        ledger.offer(f"d{i}", is_data=True)
    ledger.offer("eop", is_data=False)
    assert drain(ledger) == [("d0", 2)]
    assert ledger.discard() == 3
    assert ledger.backlog == 0
    assert ledger.queued == 0
    ledger.add_credit(1)
    assert ledger.pop_sendable() is None
    # Discarding touches neither credit nor the accounting counters.
    assert ledger.statistics() == LedgerStats(credit=1, backlog=0, queued=0, granted=2, data_sent=1)


# -- InputCredits (receiver side) --------------------------------------------------------


@pytest.mark.parametrize(
    ("exclusive", "floating", "message"),
    [
        (0, 0, "exclusive credits per channel must be >= 1, got 0"),
        (-3, 4, "exclusive credits per channel must be >= 1, got -3"),
        (1, -1, "floating credits must be >= 0, got -1"),
    ],
)
def test_input_credits_rejects_invalid_configuration(
    exclusive: int, floating: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        InputCredits([0, 1], exclusive=exclusive, floating=floating)


def totals(grants: list[tuple[int, int]]) -> dict[int, int]:
    """Credits granted per channel (a grant list may name a channel more than once)."""
    out: dict[int, int] = {}
    for channel, credits in grants:
        assert credits > 0
        out[channel] = out.get(channel, 0) + credits
    return out


def test_input_credits_initial_state() -> None:
    credits = InputCredits([3, 5], exclusive=2, floating=4)
    assert credits.pool() == 4
    assert credits.channel_state(3) == (2, 0, 0)
    assert credits.channel_state(5) == (2, 0, 0)


def test_overdraft_raises_channel_error() -> None:
    credits = InputCredits([7], exclusive=1, floating=0)
    assert credits.on_buffer(7, 0) == []
    assert credits.channel_state(7) == (0, 1, 0)
    with pytest.raises(ChannelError, match=r"channel 7: sender overdraft"):
        credits.on_buffer(7, 0)
    # The rejected buffer was not counted.
    assert credits.channel_state(7) == (0, 1, 0)


def test_overdraft_with_floating_pool_empty() -> None:
    credits = InputCredits([0, 1], exclusive=1, floating=1)
    # Channel 0 takes the only floating slot.
    assert credits.on_buffer(0, 1) == [(0, 1)]
    assert credits.on_buffer(0, 0) == []
    assert credits.channel_state(0) == (0, 2, 1)
    with pytest.raises(ChannelError, match="overdraft"):
        credits.on_buffer(0, 0)


def test_unknown_channel_is_a_channel_error() -> None:
    credits = InputCredits([0], exclusive=1, floating=0)
    for call in (
        lambda: credits.on_buffer(9, 0),
        lambda: credits.on_consumed(9),
        lambda: credits.on_end(9),
        lambda: credits.channel_state(9),
    ):
        with pytest.raises(ChannelError, match="channel 9 is not an input of this gate"):
            call()


def test_negative_backlog_is_rejected() -> None:
    credits = InputCredits([0], exclusive=2, floating=0)
    with pytest.raises(ChannelError, match="channel 0: negative backlog -1"):
        credits.on_buffer(0, -1)
    assert credits.channel_state(0) == (2, 0, 0)


def test_consuming_more_than_was_queued_is_rejected() -> None:
    credits = InputCredits([0], exclusive=1, floating=0)
    with pytest.raises(ChannelError, match="channel 0: consumed a buffer that was never queued"):
        credits.on_consumed(0)


def test_data_after_end_of_partition_is_rejected() -> None:
    credits = InputCredits([0], exclusive=2, floating=0)
    assert credits.on_end(0) == []
    with pytest.raises(ChannelError, match="channel 0: data after END_OF_PARTITION"):
        credits.on_buffer(0, 0)


def test_exclusive_slot_is_reannounced_to_its_channel() -> None:
    credits = InputCredits([0, 1], exclusive=1, floating=0)
    assert credits.on_buffer(0, 3) == []  # no floating slots to hand out
    assert credits.on_consumed(0) == [(0, 1)]
    assert credits.channel_state(0) == (1, 0, 0)
    assert credits.channel_state(1) == (1, 0, 0)


def test_floating_credit_goes_to_the_channel_with_backlog() -> None:
    credits = InputCredits([0, 1], exclusive=1, floating=3)
    # Channel 0 reports 2 more buffers behind this one: it wants backlog + exclusive = 3
    # announced slots and gets all three floating ones.
    assert credits.on_buffer(0, 2) == [(0, 3)]
    assert credits.channel_state(0) == (3, 1, 3)
    assert credits.pool() == 0
    # Channel 1 is idle (no backlog) and the pool is empty: nothing for it yet.
    assert credits.on_buffer(1, 0) == []
    assert credits.channel_state(1) == (0, 1, 0)


def test_fill_is_the_share_of_all_slots_holding_unconsumed_buffers() -> None:
    credits = InputCredits([0, 1], exclusive=2, floating=4)  # 8 slots in all
    assert credits.fill() == 0.0
    credits.on_buffer(0, 5)  # takes the 4 floating slots
    credits.on_buffer(0, 4)
    credits.on_buffer(1, 0)
    assert credits.fill() == 3 / 8
    credits.on_consumed(0)
    assert credits.fill() == 2 / 8
    for _ in range(4):
        credits.on_buffer(0, 4)
    credits.on_buffer(1, 0)
    assert credits.channel_state(0) == (1, 5, 4)  # one of its 6 slots still free
    assert credits.fill() == 7 / 8
    credits.on_buffer(0, 4)
    assert credits.fill() == 1.0


def test_idle_channel_gets_no_more_than_exclusive_worth_of_credit() -> None:
    credits = InputCredits([0, 1], exclusive=2, floating=5)
    # No backlog: a floating slot only refills the announced credit to `exclusive`.
    assert credits.on_buffer(0, 0) == [(0, 1)]
    assert credits.channel_state(0) == (2, 1, 1)
    assert credits.pool() == 4
    # Once consumed, the channel has enough: the floating slot goes back to the pool.
    assert credits.on_consumed(0) == []
    assert credits.channel_state(0) == (2, 0, 0)
    assert credits.pool() == 5


def test_released_floating_slot_goes_to_a_waiting_channel() -> None:
    credits = InputCredits([0, 1], exclusive=1, floating=2)
    assert credits.on_buffer(0, 1) == [(0, 2)]
    assert credits.on_buffer(1, 4) == []  # wants more; pool is empty: it waits
    # Channel 0's sender has caught up (backlog 0): after consuming it has enough and
    # releases a floating slot, which goes straight to the waiting channel 1.
    assert credits.on_buffer(0, 0) == []
    assert credits.on_consumed(0) == [(1, 1)]
    assert credits.channel_state(1) == (1, 1, 1)
    assert credits.pool() == 0


def test_floating_slot_is_kept_while_the_channel_still_has_backlog() -> None:
    credits = InputCredits([0], exclusive=1, floating=1)
    assert credits.on_buffer(0, 5) == [(0, 1)]
    assert credits.on_buffer(0, 4) == []
    assert credits.channel_state(0) == (0, 2, 1)
    # Backlog 4 is still far above what is announced: both slots are re-announced.
    assert credits.on_consumed(0) == [(0, 1)]
    assert credits.on_consumed(0) == [(0, 1)]
    assert credits.channel_state(0) == (2, 0, 1)
    assert credits.pool() == 0


def test_on_end_releases_floating_slots_to_waiting_channels() -> None:
    credits = InputCredits([0, 1], exclusive=1, floating=3)
    assert credits.on_buffer(0, 5) == [(0, 3)]  # channel 0 holds the whole pool
    assert credits.on_buffer(1, 2) == []  # channel 1 waits for floating slots
    # Channel 0 ends: its 3 announced floating credits will never be spent.
    assert totals(credits.on_end(0)) == {1: 3}
    assert credits.channel_state(0) == (0, 1, 0)
    assert credits.channel_state(1) == (3, 1, 3)
    assert credits.pool() == 0
    # The buffer still queued on channel 0 was in an exclusive slot: consuming it frees
    # nothing for anyone and nothing is re-announced to the ended channel.
    assert credits.on_consumed(0) == []
    assert credits.channel_state(0) == (0, 0, 0)


def test_on_end_with_queued_floating_buffers_releases_them_on_consumption() -> None:
    credits = InputCredits([0, 1], exclusive=1, floating=2)
    assert credits.on_buffer(0, 2) == [(0, 2)]
    assert credits.on_buffer(0, 1) == []
    assert credits.on_buffer(0, 0) == []
    assert credits.channel_state(0) == (0, 3, 2)
    assert credits.on_buffer(1, 3) == []  # waiting
    assert credits.on_end(0) == []  # nothing announced: nothing to free yet
    assert credits.on_consumed(0) == [(1, 1)]
    assert credits.on_consumed(0) == [(1, 1)]
    assert credits.on_consumed(0) == []
    assert credits.channel_state(0) == (0, 0, 0)
    assert credits.channel_state(1) == (2, 1, 2)
    assert credits.pool() == 0


def test_ended_channel_leaves_the_waiting_list() -> None:
    credits = InputCredits([0, 1, 2], exclusive=1, floating=1)
    assert credits.on_buffer(0, 3) == [(0, 1)]
    assert credits.on_buffer(1, 3) == []  # waits first
    assert credits.on_buffer(2, 3) == []  # waits second
    assert credits.on_end(1) == []
    assert credits.on_consumed(1) == []
    # Channel 0's sender caught up; once it has enough, the slot it frees goes to
    # channel 2, not to the ended channel 1.
    assert credits.on_buffer(0, 0) == []
    assert credits.on_consumed(0) == [(0, 1)]  # still below backlog + exclusive
    assert credits.on_consumed(0) == [(2, 1)]
    assert credits.channel_state(1) == (0, 0, 0)


# -- the whole protocol as a state machine -----------------------------------------------

DATA, WATERMARK, BARRIER, EOP = "data", "watermark", "barrier", "eop"
MAX_CHANNELS = 3


@dataclass
class Frame:
    kind: str
    ident: int
    backlog: int = 0


@dataclass
class Channel:
    ledger: CreditLedger[Frame]
    offered: list[Frame] = field(default_factory=list)  # in offer order
    wire: deque[Frame] = field(default_factory=deque)  # sent, not yet delivered
    credit_wire: deque[int] = field(default_factory=deque)  # grants not yet delivered
    delivered: list[Frame] = field(default_factory=list)
    unconsumed: deque[Frame] = field(default_factory=deque)  # data queued at the receiver
    eop_offered: bool = False
    ended: bool = False  # END_OF_PARTITION delivered to the receiver


class CreditProtocol(RuleBasedStateMachine):
    """Senders, wires and one receiving gate, driven in any interleaving."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: list[Channel] = []
        self.next_ident = 0

    @initialize(
        n=st.integers(1, MAX_CHANNELS),
        exclusive=st.integers(1, 3),
        floating=st.integers(0, 3),
    )
    def setup(self, n: int, exclusive: int, floating: int) -> None:
        self.exclusive = exclusive
        self.floating = floating
        self.receiver = InputCredits(range(n), exclusive=exclusive, floating=floating)
        self.channels = [Channel(CreditLedger(exclusive)) for _ in range(n)]

    def ch(self, index: int) -> Channel:
        return self.channels[index % len(self.channels)]

    def route(self, grants: list[tuple[int, int]]) -> None:
        for channel, credits in grants:
            assert credits > 0, f"empty grant {grants}"
            target = self.channels[channel]
            assert not target.ended, f"credit granted to ended channel {channel}: {grants}"
            target.credit_wire.append(credits)

    # -- rules ---------------------------------------------------------------------------

    @rule(
        index=st.integers(0, MAX_CHANNELS - 1),
        kind=st.sampled_from([DATA, DATA, WATERMARK]),
        count=st.integers(1, 4),
    )
    def offer(self, index: int, kind: str, count: int) -> None:
        c = self.ch(index)
        if c.eop_offered:
            return
        for _ in range(count):
            frame = Frame(kind, self.next_ident)
            self.next_ident += 1
            c.offered.append(frame)
            c.ledger.offer(frame, is_data=kind == DATA)

    @rule(index=st.integers(0, MAX_CHANNELS - 1), kind=st.sampled_from([BARRIER, EOP]))
    def offer_event(self, index: int, kind: str) -> None:
        c = self.ch(index)
        if c.eop_offered:
            return
        frame = Frame(kind, self.next_ident)
        self.next_ident += 1
        c.offered.append(frame)
        c.ledger.offer(frame, is_data=False)
        c.eop_offered = kind == EOP

    @rule(index=st.integers(0, MAX_CHANNELS - 1), limit=st.integers(1, 4))
    def send(self, index: int, limit: int) -> None:
        c = self.ch(index)
        for _ in range(limit):
            before = c.ledger.statistics()
            item = c.ledger.pop_sendable()
            after = c.ledger.statistics()
            if item is None:
                # Nothing may go: either nothing is queued or data waits for credit.
                assert before.queued == 0 or before.credit == 0
                assert after == before
                return
            frame, backlog = item
            if frame.kind == DATA:
                assert before.credit > 0, "data sent without credit"
                assert after.credit == before.credit - 1
                assert after.data_sent == before.data_sent + 1
            else:
                assert after.credit == before.credit
            assert backlog == after.backlog
            # The reported backlog is exactly the data still queued behind this frame.
            sent = len(c.wire) + len(c.delivered)
            behind = c.offered[sent + 1 :]
            assert backlog == sum(1 for f in behind if f.kind == DATA)
            frame.backlog = backlog
            c.wire.append(frame)

    @rule(index=st.integers(0, MAX_CHANNELS - 1))
    def deliver(self, index: int) -> None:
        c = self.ch(index)
        if not c.wire:
            return
        frame = c.wire.popleft()
        channel = self.channels.index(c)
        c.delivered.append(frame)
        if frame.kind == DATA:
            self.route(self.receiver.on_buffer(channel, frame.backlog))
            c.unconsumed.append(frame)
        elif frame.kind == EOP:
            c.ended = True
            self.route(self.receiver.on_end(channel))

    @rule(index=st.integers(0, MAX_CHANNELS - 1))
    def consume(self, index: int) -> None:
        c = self.ch(index)
        if not c.unconsumed:
            return
        c.unconsumed.popleft()
        self.route(self.receiver.on_consumed(self.channels.index(c)))

    @rule(index=st.integers(0, MAX_CHANNELS - 1))
    def deliver_credit(self, index: int) -> None:
        c = self.ch(index)
        if c.credit_wire:
            c.ledger.add_credit(c.credit_wire.popleft())

    def check_all_invariants(self) -> None:
        """Every invariant, for use between the steps of a compound rule."""
        self.sender_accounting()
        self.frames_stay_in_offer_order()
        self.every_receiver_slot_is_promised_or_holds_a_buffer()
        self.floating_slots_are_conserved()
        self.announced_credit_is_held_or_in_flight()
        self.pool_is_not_idle_while_a_channel_is_starved()
        self.no_credit_lost()

    def step_channel(self, i: int, *, consume: bool) -> bool:
        """One round of sending, delivering, consuming and returning credit; any moved?"""
        c = self.channels[i]
        before = (len(c.wire), len(c.delivered), len(c.unconsumed), len(c.credit_wire))
        self.send(i, 1)
        self.check_all_invariants()
        for action in (self.deliver, self.consume, self.deliver_credit):
            if action is self.consume and not consume:
                continue
            action(i)
            self.check_all_invariants()
        return before != (len(c.wire), len(c.delivered), len(c.unconsumed), len(c.credit_wire))

    @rule(index=st.integers(0, MAX_CHANNELS - 1))
    def pump(self, index: int) -> None:
        """Move one channel's frames and credits until it blocks, consuming nothing."""
        i = self.channels.index(self.ch(index))
        while self.step_channel(i, consume=False):
            pass

    @rule()
    def settle(self) -> None:
        """Run everything to quiescence: whatever was offered must get through."""
        for _ in range(100_000):
            progress = False
            for i in range(len(self.channels)):
                progress |= self.step_channel(i, consume=True)
            if not progress:
                break
        else:  # pragma: no cover - would be a livelock
            raise AssertionError("flow control did not settle")
        for i, c in enumerate(self.channels):
            # Liveness: credit always comes back, so nothing is stuck at the sender.
            assert c.ledger.queued == 0, f"channel {i} stuck with {c.ledger.statistics()}"
            assert c.delivered == c.offered
        self.no_credit_lost()
        # Idle and fully consumed: each live channel is back to its exclusive credit and
        # every floating slot is back in the pool (ended channels hold nothing).
        for i, c in enumerate(self.channels):
            announced, _, held = self.receiver.channel_state(i)
            assert held == 0, f"channel {i} still holds {held} floating slots"
            assert announced == (0 if c.ended else self.exclusive)
        assert self.receiver.pool() == self.floating

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def no_credit_lost(self) -> None:
        """Once every frame is delivered and every buffer consumed, a live sender holds
        (or has on its way) exactly the credit the receiver announced to it."""
        if any(c.wire or c.unconsumed for c in self.channels):
            return
        for i, c in enumerate(self.channels):
            if c.ended:
                continue
            announced, queued, _ = self.receiver.channel_state(i)
            assert queued == 0
            assert c.ledger.credit + sum(c.credit_wire) == announced, (
                f"channel {i}: sender credit {c.ledger.credit} + in flight "
                f"{sum(c.credit_wire)} != announced {announced}"
            )

    @invariant()
    def sender_accounting(self) -> None:
        for c in self.channels:
            stats = c.ledger.statistics()
            assert stats.credit >= 0
            assert stats.granted == stats.data_sent + stats.credit
            sent_data = sum(1 for f in [*c.delivered, *c.wire] if f.kind == DATA)
            assert stats.data_sent == sent_data
            assert stats.backlog == sum(
                1 for f in c.offered[len(c.delivered) + len(c.wire) :] if f.kind == DATA
            )

    @invariant()
    def frames_stay_in_offer_order(self) -> None:
        for c in self.channels:
            sent = [*c.delivered, *c.wire]
            assert sent == c.offered[: len(sent)]

    @invariant()
    def every_receiver_slot_is_promised_or_holds_a_buffer(self) -> None:
        for i, c in enumerate(self.channels):
            announced, queued, held = self.receiver.channel_state(i)
            assert announced >= 0
            assert queued == len(c.unconsumed)
            if not c.ended:
                assert announced + queued == self.exclusive + held
            else:
                # Nothing is promised to an ended sender; every buffer still queued has a
                # slot, and no floating slot is kept that does not hold a buffer.
                assert announced == 0
                assert queued <= self.exclusive + held
                assert held <= max(0, queued - self.exclusive), (
                    f"ended channel {i} keeps {held} floating slots for {queued} buffers"
                )

    @invariant()
    def floating_slots_are_conserved(self) -> None:
        held = sum(self.receiver.channel_state(i)[2] for i in range(len(self.channels)))
        assert self.receiver.pool() >= 0
        assert self.receiver.pool() + held == self.floating

    @invariant()
    def announced_credit_is_held_or_in_flight(self) -> None:
        # Stronger than "no credit lost": at any moment, a live channel's announced
        # credit is held by the sender, on its way back, or spent on data on the wire.
        for i, c in enumerate(self.channels):
            if c.ended:
                continue
            announced = self.receiver.channel_state(i)[0]
            on_wire = sum(1 for f in c.wire if f.kind == DATA)
            assert c.ledger.credit + sum(c.credit_wire) + on_wire == announced

    @invariant()
    def pool_is_not_idle_while_a_channel_is_starved(self) -> None:
        # Floating slots sit in the pool only if no live channel wants more than it has.
        if self.receiver.pool() == 0:
            return
        for i, c in enumerate(self.channels):
            if c.ended or not any(f.kind == DATA for f in c.delivered):
                continue
            last_backlog = next(f.backlog for f in reversed(c.delivered) if f.kind == DATA)
            announced = self.receiver.channel_state(i)[0]
            assert announced >= last_backlog + self.exclusive, (
                f"channel {i} starved (announced {announced}, backlog {last_backlog}) "
                f"while {self.receiver.pool()} floating slots are free"
            )


TestCreditProtocol = CreditProtocol.TestCase
