"""The coordinator never blocks its event loop on an HTTP client.

While its job runs, bad clients hold connections to the coordinator's HTTP server:
slow readers that ask for the largest answers (many requests pipelined on each) and
never read them, slowloris clients that trickle request headers they never finish, and
idle connections. All the while the health endpoint answers quickly, the job's records
rise and its checkpoints complete, and the coordinator's memory stays bounded; once
the bad clients are gone, everything is as before.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from mesh.client.client import open_client
from tests.helpers import poll_until_sync
from tests.web import ServedJob, http, serving_cluster

SLOW_READERS = 20
SLOWLORIS = 20
IDLE = 5
# Requests pipelined on each slow reader's connection: served all at once, their
# answers would take far more memory than the bound below.
PIPELINED = 500
PROBE_FOR_S = 5.0
PROBE_BOUND_S = 1.0
RSS_GROWTH_BOUND = 48 << 20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedJob]:
    with serving_cluster(tmp_path_factory.mktemp("web-slow-clients")) as served:
        yield served


def address(served: ServedJob) -> tuple[str, int]:
    url = urlsplit(served.base)
    assert url.hostname == "127.0.0.1" and url.port
    return url.hostname, url.port


def coordinator_rss(served: ServedJob) -> int:
    """The coordinator process's resident memory, in bytes."""
    coordinator = served.cluster.coordinator
    assert coordinator is not None and coordinator.alive()
    with open(f"/proc/{coordinator.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in the coordinator's /proc status")


def job(served: ServedJob) -> dict[str, Any]:
    reply = http(served.base, f"/api/v1/jobs/{served.job_id}", timeout_s=5)
    assert reply.status == 200, reply.raw[:300]
    body: dict[str, Any] = reply.body
    assert body["state"] == "RUNNING", body
    return body


def progress(served: ServedJob) -> tuple[float, int]:
    """Records out so far, and the latest completed checkpoint's id, as the coordinator
    tells its control clients (not over HTTP)."""

    async def ask() -> dict[str, Any]:
        async with open_client(served.cluster.address) as client:
            return await client.status(served.job_id)

    status = anyio.run(ask)
    assert status["state"] == "RUNNING", status
    latest = status["checkpoints"]["latest"]
    return status["totals"]["records_out"], latest["checkpoint_id"] if latest else -1


def wait_for_progress(served: ServedJob, what: str) -> None:
    """The job's records rise and a new checkpoint completes."""
    records, checkpoint = progress(served)
    poll_until_sync(
        lambda: progress(served),
        until=lambda now: now[0] > records + 500 and now[1] > checkpoint,
        timeout_s=30,
        what=what,
    )


def large_paths(served: ServedJob) -> list[str]:
    """The largest answers the API gives about this job."""
    job_path = f"/api/v1/jobs/{served.job_id}"
    return [
        "/api/v1/openapi.json",
        f"{job_path}/checkpoints?limit=500",
        f"{job_path}/graph",
        f"{job_path}/tasks/0/subtasks",
        f"{job_path}/tasks/1/subtasks",
        f"{job_path}/failovers",
        "/api/v1/nodes",
    ]


def connect(stack: ExitStack, served: ServedJob, *, rcvbuf: int | None = None) -> socket.socket:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(address(served))
    sock.setblocking(False)
    return sock


def send_some(sock: socket.socket, data: bytes) -> int:
    """Send what fits without blocking; how much was sent."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def pending(sock: socket.socket) -> int:
    """Bytes the server sent that ``sock`` has not read (peeked, not consumed); fails if
    the server closed the connection."""
    try:
        data = sock.recv(1 << 20, socket.MSG_PEEK)
    except BlockingIOError:
        return 0
    assert data, "the server closed the connection"
    return len(data)


def test_slow_idle_and_slowloris_clients_do_not_block_the_coordinator(
    served: ServedJob,
) -> None:
    wait_for_progress(served, "the job to make progress before the bad clients come")
    # A few answers of each kind first, so that their memory is counted in the baseline.
    for path in large_paths(served):
        assert http(served.base, path).status == 200
    rss_before = coordinator_rss(served)
    latencies: list[float] = []
    with ExitStack() as stack:
        paths = large_paths(served)
        readers = []
        for i in range(SLOW_READERS):
            sock = connect(stack, served, rcvbuf=4096)
            request = f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            readers.append((sock, (request * PIPELINED).encode()))
        loris = []
        for _ in range(SLOWLORIS):
            sock = connect(stack, served)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            loris.append(sock)
        idle = [connect(stack, served) for _ in range(IDLE)]

        rss_peak = 0
        start = time.monotonic()
        while time.monotonic() - start < PROBE_FOR_S:
            # The readers push more of their pipelined requests as far as the server
            # reads them; the slowloris clients send one more header line each.
            readers = [(s, data[send_some(s, data) :]) for s, data in readers]
            for sock in loris:
                send_some(sock, b"X-Trickle: 1\r\n")
            asked = time.monotonic()
            reply = http(served.base, "/api/v1/health", timeout_s=10)
            latencies.append(time.monotonic() - asked)
            assert reply.status == 200 and reply.body["status"] == "ok"
            rss_peak = max(rss_peak, coordinator_rss(served))
            time.sleep(0.1)  # the probes' pace

        # While they hang on, the job goes on and larger answers come promptly too.
        wait_for_progress(served, "the job to make progress with the bad clients connected")
        for path in large_paths(served):
            asked = time.monotonic()
            assert http(served.base, path, timeout_s=10).status == 200
            assert time.monotonic() - asked < PROBE_BOUND_S, path
        rss_peak = max(rss_peak, coordinator_rss(served))

        # The server did answer the slow readers (their answers wait unread in their
        # buffers), and holds the other connections open, answering none of them.
        assert all(pending(sock) for sock, _ in readers)
        assert all(pending(sock) == 0 for sock in loris + idle)

    assert len(latencies) >= 10, latencies
    assert max(latencies) < PROBE_BOUND_S, sorted(latencies)[-5:]
    growth = rss_peak - rss_before
    assert growth < RSS_GROWTH_BOUND, f"the coordinator grew by {growth >> 20} MiB"
    print(
        f"health: {len(latencies)} probes, max {max(latencies) * 1000:.1f} ms; "
        f"coordinator RSS {rss_before >> 20} MiB, peak +{growth >> 10} KiB"
    )

    # With the bad clients gone: everything as before.
    wait_for_progress(served, "the job to make progress after the bad clients left")
    for path in large_paths(served):
        reply = http(served.base, path, timeout_s=5)
        assert reply.status == 200 and reply.body
    detail = job(served)
    assert (detail["attempt"], detail["restarts"], detail["error"]) == (0, 0, None)
    assert served.cluster.coordinator is not None and served.cluster.coordinator.alive()
