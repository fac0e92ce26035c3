"""The waiting helpers every test uses: ``poll_until`` and its sync twin."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from tests.helpers import poll_until, poll_until_sync


@pytest.mark.asyncio
async def test_poll_until_returns_the_first_truthy_value_of_a_sync_or_async_probe() -> None:
    calls: list[int] = []

    def probe() -> list[int]:
        calls.append(len(calls))
        return calls[2:]

    assert await poll_until(probe, timeout_s=5, interval_s=0.001, what="three calls") == [2]
    assert len(calls) == 3

    async def async_probe() -> int:
        await anyio.lowlevel.checkpoint()
        calls.append(len(calls))
        return len(calls)

    found = await poll_until(
        async_probe, until=lambda n: n >= 6, timeout_s=5, interval_s=0.001, what="six calls"
    )
    assert found == 6


@pytest.mark.asyncio
async def test_poll_until_fails_at_the_deadline_naming_what_and_the_last_value() -> None:
    values = iter(range(10_000))
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        await poll_until(
            lambda: {"n": next(values)},
            until=lambda v: v["n"] < 0,
            timeout_s=0.2,
            interval_s=0.01,
            what="a negative n",
            show=lambda v: f"n={v['n']}",
        )
    assert 0.2 <= time.monotonic() - started < 2
    message = str(failure.value)
    assert message.startswith("timed out after 0.2 s waiting for a negative n; last value: n=")
    last = int(message.rsplit("n=", 1)[1])
    assert last == next(values) - 1  # the value of the very last call


@pytest.mark.asyncio
async def test_poll_until_lets_what_the_probe_raises_through() -> None:
    def probe() -> bool:
        raise TimeoutError("the probe's own")

    with pytest.raises(TimeoutError, match="the probe's own"):
        await poll_until(probe, timeout_s=5, what="nothing")


def test_poll_until_sync_returns_the_value_or_fails_after_the_deadline() -> None:
    calls: list[int] = []

    def probe() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert poll_until_sync(probe, timeout_s=5, interval_s=0.001, what="three calls") == 3

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"waiting for never; last value: \[\]"):
        poll_until_sync(lambda: [], timeout_s=0.2, interval_s=0.01, what="never")
    assert 0.2 <= time.monotonic() - started < 2
