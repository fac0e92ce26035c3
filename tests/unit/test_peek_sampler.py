"""The peek sampler without sockets or clocks: how many records it takes and when, which
ones, how it encodes them, and how its lease ends."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from mesh.node.runtime.peek import MAX_RATE, PeekSampler, encode_sample


def offer_all(sampler: PeekSampler, offers: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Offer a batch of ``size`` fresh records at each ``now``, draining after each; returns
    (now, records taken) for each, checking what ``drain`` hands over."""
    taken = []
    counter = 0
    for now, size in offers:
        batch = list(range(counter, counter + size))
        counter += size
        n = sampler.offer(batch, now)
        drained = sampler.drain()
        shown = orjson.loads(drained) if drained is not None else []
        assert len(shown) == n
        assert set(shown) <= set(batch) and shown == sorted(shown)  # of this batch, in order
        taken.append((now, n))
    return taken


def most_in_any_second(taken: list[tuple[float, int]]) -> int:
    """The most records taken within any window [t, t + 1000 ms)."""
    return max(
        (sum(n for t, n in taken if start <= t < start + 1000) for start, _ in taken),
        default=0,
    )


# Batches at non-decreasing times: (gap before it in ms, its size).
offers = st.lists(
    st.tuples(st.floats(0, 600, allow_nan=False), st.integers(0, 300)),
    max_size=60,
).map(
    lambda gaps: [(sum(gap for gap, _ in gaps[: i + 1]), size) for i, (_, size) in enumerate(gaps)]
)


@given(rate=st.integers(-5, 500), offers=offers)
def test_it_never_takes_more_than_its_rate_in_any_second(
    rate: int, offers: list[tuple[float, int]]
) -> None:
    sampler = PeekSampler(rate, lease_ms=3_600_000, now_ms=0)
    taken = offer_all(sampler, offers)
    assert most_in_any_second(taken) <= min(max(rate, 0), MAX_RATE)


@given(
    first=st.integers(1, 300),
    second=st.integers(0, 300),
    offers=offers,
    renew_at=st.integers(0, 59),
)
def test_a_renewed_rate_holds_from_the_renewal_on(
    first: int, second: int, offers: list[tuple[float, int]], renew_at: int
) -> None:
    sampler = PeekSampler(first, lease_ms=3_600_000, now_ms=0)
    before = offer_all(sampler, offers[:renew_at])
    at = before[-1][0] if before else 0.0
    sampler.renew(second, 3_600_000, at)
    after = offer_all(sampler, offers[renew_at:])
    # Over every window, never more than the larger of the two rates ...
    assert most_in_any_second(before + after) <= min(max(first, second), MAX_RATE)
    # ... and each take after the renewal keeps the second ending there within the new.
    for t, n in after:
        if n:
            recent = sum(k for s, k in before + after if t - 1000 < s <= t)
            assert recent <= min(second, MAX_RATE)


@given(lease=st.integers(0, 5000), offers=offers)
def test_it_takes_nothing_once_its_lease_ran_out(
    lease: int, offers: list[tuple[float, int]]
) -> None:
    sampler = PeekSampler(MAX_RATE, lease_ms=lease, now_ms=0)
    for now, n in offer_all(sampler, offers):
        if now >= lease:
            assert n == 0
        assert sampler.expired(now) == (now >= lease)


def test_a_steady_stream_shows_its_rate_as_a_trickle_not_a_burst() -> None:
    sampler = PeekSampler(40, lease_ms=60_000, now_ms=0)
    # 1000 records every 10 ms for 10 s.
    taken = offer_all(sampler, [(float(t), 1000) for t in range(0, 10_000, 10)])
    assert 395 <= sum(n for _, n in taken) <= 400  # about the rate, every second
    per_flush = [sum(n for t, n in taken if q <= t < q + 250) for q in range(0, 10_000, 250)]
    assert min(per_flush) >= 9 and max(per_flush) <= 11  # a quarter second's worth each


def test_a_slow_stream_gets_a_quarter_seconds_worth_a_batch() -> None:
    sampler = PeekSampler(40, lease_ms=60_000, now_ms=0)
    taken = offer_all(sampler, [(float(t), 1000) for t in range(0, 10_000, 2000)])
    assert [n for _, n in taken] == [1, 10, 10, 10, 10]


def test_a_zero_lease_stops_it_at_once_and_drops_what_it_took() -> None:
    sampler = PeekSampler(10, lease_ms=10_000, now_ms=0)
    assert sampler.offer([1, 2, 3], 1000) == 3
    sampler.renew(10, 0, 1200)
    assert sampler.expired(1200)
    assert sampler.drain() is None
    assert sampler.offer([4, 5], 1200) == 0
    assert sampler.offer([4, 5], 5_000) == 0


def test_renewing_extends_the_lease_from_now() -> None:
    sampler = PeekSampler(10, lease_ms=1_000, now_ms=0)
    sampler.renew(10, 1_000, 900)
    assert not sampler.expired(1_500)
    assert sampler.offer([1], 1_500) == 1
    assert sampler.expired(1_900)
    assert sampler.offer([2], 1_900) == 0


def test_it_takes_a_spread_of_a_batch_larger_than_it_may_take() -> None:
    sampler = PeekSampler(MAX_RATE, lease_ms=10_000, now_ms=0)
    assert sampler.offer(list(range(100)), 0) == 1  # the first at once
    assert sampler.offer(list(range(100)), 1000) == 25  # then a quarter second's worth
    assert orjson.loads(sampler.drain() or b"") == [0, *range(0, 100, 4)]
    assert sampler.drain() is None  # handed over once


def test_it_asks_for_at_most_one_hundred_a_second_whatever_is_asked() -> None:
    sampler = PeekSampler(10_000, lease_ms=10_000, now_ms=0)
    assert sampler.rate == MAX_RATE
    taken = offer_all(sampler, [(float(t), 10_000) for t in range(0, 3000, 5)])
    assert sum(n for _, n in taken) == 3 * MAX_RATE


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(7)"


class Unshowable:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_records_are_encoded_as_on_the_wire_or_shown_as_their_repr() -> None:
    records: list[Any] = [{"user": "a", "n": [1, 2.5, None]}, "x", Opaque(), {1, 2}, Unshowable()]
    sampler = PeekSampler(MAX_RATE, lease_ms=10_000, now_ms=0)
    assert sampler.offer(records, 1000) == 5
    assert orjson.loads(sampler.drain() or b"") == [
        {"user": "a", "n": [1, 2.5, None]},
        "x",
        "Opaque(7)",
        "{1, 2}",
        "<Unshowable>",
    ]
    assert encode_sample(2**70) == orjson.dumps(repr(2**70))  # too large for JSON numbers here


def test_a_sample_holds_the_record_as_it_was_when_taken() -> None:
    sampler = PeekSampler(MAX_RATE, lease_ms=10_000, now_ms=0)
    record = {"n": 1}
    assert sampler.offer([record], 0) == 1
    record["n"] = 2  # against the rules, but the sample is already encoded
    assert orjson.loads(sampler.drain() or b"") == [{"n": 1}]
