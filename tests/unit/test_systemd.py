"""The sd_notify pieces without daemons: the watchdog decision, the node's status line,
non-blocking sends, and watchdog pings that stop while the event loop is blocked."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import pytest

from mesh.commands.service import keep_starting, node_status, send_watchdog_pings
from mesh.systemd import NotifyListener, notify, watchdog_period_s
from tests.helpers import poll_until


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    notify_socket = NotifyListener()
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    try:
        yield notify_socket
    finally:
        notify_socket.close()


def drain(listener: NotifyListener) -> list[dict[str, str]]:
    messages = []
    while (message := listener.receive(0)) is not None:
        messages.append(message)
    return messages


@pytest.mark.parametrize(
    ("env", "period"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": " 1000000 ", "WATCHDOG_PID": " 42 "}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": "42"}, None),
    ],
)
def test_watchdog_period(env: dict[str, str], period: float | None) -> None:
    assert watchdog_period_s(env, 42) == period


def test_node_status_line() -> None:
    address = "tcp://10.0.0.1:5550"
    assert (
        node_status(address, registering=False, slots=2, busy=1)
        == "registered with the coordinator at tcp://10.0.0.1:5550, 2 slots, 1 busy"
    )
    assert (
        node_status(address, registering=True, slots=1, busy=0)
        == "registering again with the coordinator at tcp://10.0.0.1:5550 (1 slot, 0 busy)"
    )


def test_notify_without_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify(READY=1) is False


def test_notify_sends_key_value_lines(listener: NotifyListener) -> None:
    assert notify(READY=1, STATUS="up and running")
    assert drain(listener) == [{"READY": "1", "STATUS": "up and running"}]


def test_notify_never_blocks_on_a_listener_that_stopped_reading(
    listener: NotifyListener,
) -> None:
    # The queue of an unread datagram socket is short (net.unix.max_dgram_qlen): the
    # sends beyond it fail at once instead of waiting for a reader.
    sent = [notify(STATUS=str(i)) for i in range(2000)]
    assert sent[0] and not all(sent)


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(listener: NotifyListener) -> None:
    period_s = 0.02

    def pings() -> int:
        return sum(m == {"WATCHDOG": "1"} for m in drain(listener))

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_watchdog_pings, period_s)
            await poll_until(pings, timeout_s=10, interval_s=0.01, what="a watchdog ping")
            pings()  # whatever came since
            # Block the loop (the thing under test): 15 periods, and no ping.
            time.sleep(15 * period_s)  # noqa: ASYNC251 - a blocked loop is the point
            assert pings() == 0
            # The loop runs again: so do the pings.
            await poll_until(pings, timeout_s=10, interval_s=0.01, what="pings to resume")
            tg.cancel_scope.cancel()

    anyio.run(scenario)


def test_keep_starting_repeats_its_status_with_more_time(listener: NotifyListener) -> None:
    async def scenario() -> list[dict[str, str]]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_starting, "waiting for X", 0.01)
            messages = await poll_until(
                lambda: drain(listener), timeout_s=10, interval_s=0.01, what="a notice"
            )
            tg.cancel_scope.cancel()
        return messages

    first = anyio.run(scenario)[0]
    assert first == {"STATUS": "waiting for X", "EXTEND_TIMEOUT_USEC": "30000000"}
