"""What a daemon tells the service manager while it runs, over sd_notify: that it is
still starting (and why), its status line, and watchdog pings.

Nothing is sent without ``NOTIFY_SOCKET``. The tasks run on the daemon's own event
loop, on purpose: a loop that blocks stops the watchdog pings, and systemd restarts
the daemon.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from mesh.systemd import EXTEND_TIMEOUT_USEC, notify

__all__ = ["keep_starting", "node_status", "report_status", "send_watchdog_pings"]

# How often a daemon that is not ready yet asks for more start-up time: well within
# the EXTEND_TIMEOUT_USEC it asks for, so one lost message does no harm.
EXTEND_EVERY_S = 10.0

# How often the status line is recomputed (and sent if it changed).
STATUS_EVERY_S = 1.0


async def send_watchdog_pings(period_s: float) -> None:
    """``WATCHDOG=1`` now and every ``period_s`` until cancelled."""
    while True:
        notify(WATCHDOG=1)
        await anyio.sleep(period_s)


async def keep_starting(status: str, every_s: float = EXTEND_EVERY_S) -> None:
    """Until cancelled, every ``every_s``: ``STATUS=status`` and more start-up time.

    The first notice is the caller's to send (before it starts anything), so none can
    follow READY: a cancelled task never reaches its next send."""
    while True:
        await anyio.sleep(every_s)
        notify(STATUS=status, EXTEND_TIMEOUT_USEC=EXTEND_TIMEOUT_USEC)


async def report_status(
    describe: Callable[[], str], *, sent: str | None = None, every_s: float = STATUS_EVERY_S
) -> None:
    """Send ``STATUS=describe()`` whenever it differs from the last one sent (``sent``
    at first), checking every ``every_s``; a failed send is retried at the next check."""
    while True:
        await anyio.sleep(every_s)
        text = describe()
        if text != sent and notify(STATUS=text):
            sent = text


def node_status(coordinator: str, *, registering: bool, slots: int, busy: int) -> str:
    """A node's status line: where it is registered and how many of its slots are busy."""
    usage = f"{slots} slot{'s' if slots != 1 else ''}, {busy} busy"
    if registering:
        return f"registering again with the coordinator at {coordinator} ({usage})"
    return f"registered with the coordinator at {coordinator}, {usage}"
