"""Kafka client calls that must not hold up a subtask, its event loop, or the process.

librdkafka's calls take timeouts, but a transaction in flight while brokers fail over can
outlast them, and ``close()`` takes none at all (it aborts an open transaction and
flushes first). So a commit runs in a daemon thread of its own, awaited with a bound:
past the bound the subtask fails and the thread is left behind (the restarted attempt's
``init_transactions`` fences its producer). Producers close in daemon threads too, each
waited for a little. Being daemons, threads stuck in the client never keep the node's
process from exiting.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

log = logging.getLogger("mesh.connectors.kafka")

T = TypeVar("T")

#: How long closing waits for the clients before leaving them to close in the background.
CLOSE_WAIT_S = 2.0

__all__ = ["CLOSE_WAIT_S", "call_bounded", "close_clients", "discard"]


async def call_bounded(fn: Callable[..., T], *args: Any, limit_s: float, name: str) -> T:
    """``fn(*args)`` in a daemon thread; its result, or what it raised. Raises
    ``TimeoutError`` if it did not return within ``limit_s`` (it is left running), and
    returns at once, leaving it too, if the caller is cancelled."""
    done = anyio.Event()
    token = anyio.lowlevel.current_token()
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # handed to the awaiting task
            outcome.append((False, exc))
        with contextlib.suppress(Exception):  # the loop is gone: nobody waits any more
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=work, name=name, daemon=True).start()
    with anyio.move_on_after(limit_s):
        await done.wait()
    if not outcome:
        raise TimeoutError(f"{name} did not return within {limit_s:g} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def close_clients(clients: Iterable[Any], wait_s: float = CLOSE_WAIT_S) -> None:
    """Close Kafka clients, each in a daemon thread, waiting at most ``wait_s`` in all."""
    threads = []
    for client in clients:
        thread = threading.Thread(target=_close, args=(client,), name="kafka-close", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + wait_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = sum(thread.is_alive() for thread in threads)
    if left:
        log.warning(
            "%d Kafka client(s) did not close within %g s (brokers unreachable?); "
            "they close in the background",
            left,
            wait_s,
        )


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:  # a fenced or fatal producer may refuse; it is dropped anyway
        log.debug("closing a Kafka client: %s", exc)


def discard(*producers: Any, wait_s: float = CLOSE_WAIT_S) -> None:
    """Drop what producers still hold (an abandoned transaction's records) and close
    them now: a reference an exception's traceback keeps must not keep their threads and
    connections alive until the garbage collector finds it."""
    for producer in producers:
        try:
            producer.purge()
            producer.flush(0)
        except Exception as exc:  # a fenced or fatal producer may refuse; it is dropped anyway
            log.debug("discarding a producer: %s", exc)
    close_clients(producers, wait_s)
