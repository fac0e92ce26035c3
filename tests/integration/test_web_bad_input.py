"""Bad input to the REST API gets a 4xx whose JSON body names the field at fault, and
the coordinator keeps running its job: unknown and malformed ids, out-of-range and
malformed query parameters, bad savepoint bodies, a huge body, unknown paths, wrong
methods."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from mesh.coordinator.web.spec import MAX_BODY_BYTES
from tests.helpers import poll_until_sync
from tests.web import HttpReply, ServedJob, http, serving_cluster

ERROR_KEYS = {"error", "code", "field"}
JOB_PATHS = ["", "/graph", "/checkpoints", "/failovers", "/watermarks", "/metrics"]
TASK_PATHS = ["/subtasks", "/peek"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedJob]:
    with serving_cluster(tmp_path_factory.mktemp("web-bad-input")) as served:
        yield served


def refused(reply: HttpReply, status: int, field: str | None, code: str | None = None) -> str:
    """``reply`` is a JSON error with exactly error/code/field, naming ``field``; returns
    its message."""
    assert reply.status == status, (status, reply.status, reply.raw[:300])
    assert reply.headers["content-type"] == "application/json", reply.headers
    body = reply.body
    assert set(body) == ERROR_KEYS, body
    assert body["field"] == field, body
    assert isinstance(body["error"], str) and body["error"], body
    if code is not None:
        assert body["code"] == code, body
    return str(body["error"])


def healthy(served: ServedJob) -> None:
    reply = http(served.base, "/api/v1/health", timeout_s=5)
    assert reply.status == 200 and reply.body["status"] == "ok"


def detail(served: ServedJob) -> dict[str, Any]:
    reply = http(served.base, f"/api/v1/jobs/{served.job_id}")
    assert reply.status == 200, reply.raw[:300]
    body: dict[str, Any] = reply.body
    return body


def savepoints_taken(served: ServedJob) -> list[Any]:
    reply = http(served.base, f"/api/v1/jobs/{served.job_id}/checkpoints?limit=500")
    assert reply.status == 200, reply.raw[:300]
    return list(reply.body["savepoints"])


def post_savepoint(served: ServedJob, body: bytes, content_type: str = "application/json") -> Any:
    return http(
        served.base,
        f"/api/v1/jobs/{served.job_id}/savepoints",
        method="POST",
        body=body,
        headers={"Content-Type": content_type},
    )


def test_unknown_job_id_is_a_404_naming_job_id(served: ServedJob) -> None:
    real = served.job_id
    unknown = ("0" if real[0] != "0" else "1") + real[1:]
    for suffix in JOB_PATHS + [f"/tasks/0{p}" for p in TASK_PATHS]:
        message = refused(http(served.base, f"/api/v1/jobs/{unknown}{suffix}"), 404, "job_id")
        assert unknown in message
    refused(
        http(served.base, f"/api/v1/jobs/{unknown}/tasks/0/peek", method="DELETE"), 404, "job_id"
    )
    for action in ("cancel", "savepoints"):
        reply = http(served.base, f"/api/v1/jobs/{unknown}/{action}", method="POST")
        refused(reply, 404, "job_id", "not_found")
    healthy(served)


@pytest.mark.parametrize(
    "job_id",
    [
        "xyz",
        "zzzzzzzzzzzzzzzz",  # 16 characters, not hex
        "ABCDEF0123456789",  # upper case
        "0123456789abcdef0",  # 17 digits
        "0x23456789abcdef",
        "é" * 16,
        " 123456789abcdef",
        "0123456789abcde\n",
        "0123456789abcde\x00",
        "1" * 5000,
    ],
)
def test_malformed_job_id_is_a_400_naming_job_id(served: ServedJob, job_id: str) -> None:
    path = f"/api/v1/jobs/{quote(job_id, safe='')}"
    for suffix in JOB_PATHS:
        refused(http(served.base, path + suffix), 400, "job_id", "bad_id")
    for action in ("cancel", "savepoints"):
        refused(http(served.base, f"{path}/{action}", method="POST"), 400, "job_id", "bad_id")
    healthy(served)


def test_a_prefix_of_a_real_id_is_not_enough(served: ServedJob) -> None:
    """The API wants the full id (``mesh`` commands take a prefix; URLs must not)."""
    for length in (1, 8, 15):
        prefix = served.job_id[:length]
        for suffix in ("", "/graph"):
            refused(http(served.base, f"/api/v1/jobs/{prefix}{suffix}"), 400, "job_id")
        reply = http(served.base, f"/api/v1/jobs/{prefix}/cancel", method="POST")
        refused(reply, 400, "job_id")
    assert detail(served)["state"] == "RUNNING"


def test_unknown_task_is_a_404_naming_task_id(served: ServedJob) -> None:
    job = f"/api/v1/jobs/{served.job_id}"
    for task in ("2", "999999", "1000000", "0002"):
        for suffix in TASK_PATHS:
            message = refused(http(served.base, f"{job}/tasks/{task}{suffix}"), 404, "task_id")
            assert str(int(task)) in message
        reply = http(served.base, f"{job}/tasks/{task}/peek", method="DELETE")
        refused(reply, 404, "task_id", "not_found")


@pytest.mark.parametrize(
    "task_id", ["x", "-1", "1e3", "1.0", "+1", " 1", "١", "0x1", "1000001", "9" * 5000]
)
def test_malformed_task_id_is_a_400_naming_task_id(served: ServedJob, task_id: str) -> None:
    job = f"/api/v1/jobs/{served.job_id}"
    for suffix in TASK_PATHS:
        path = f"{job}/tasks/{quote(task_id, safe='')}{suffix}"
        refused(http(served.base, path), 400, "task_id", "bad_id")
    path = f"{job}/tasks/{quote(task_id, safe='')}/peek"
    refused(http(served.base, path, method="DELETE"), 400, "task_id", "bad_id")
    healthy(served)


@pytest.mark.parametrize(
    ("path", "name", "values"),
    [
        (
            "/checkpoints",
            "limit",
            ["0", "abc", "501", "-1", "", "1_0", " 5", "5 ", "٥", "1.0", "1e2", "9" * 5000],
        ),
        ("/tasks/0/peek", "max_per_second", ["0", "101", "-5", "x", "10.5"]),
        ("/tasks/0/peek", "after", ["-1", str(2**53 + 1), "9" * 5000, "a"]),
    ],
)
def test_bad_query_parameters_are_a_400_naming_them(
    served: ServedJob, path: str, name: str, values: list[str]
) -> None:
    job = f"/api/v1/jobs/{served.job_id}"
    for value in values:
        reply = http(served.base, f"{job}{path}?{name}={quote(value, safe='')}")
        refused(reply, 400, name, "bad_param")
    # Their bounds themselves are fine.
    bounds = {"limit": ["1", "500"], "max_per_second": ["1", "100"], "after": ["0", str(2**53)]}
    for value in bounds[name]:
        assert http(served.base, f"{job}{path}?{name}={value}").status == 200


def test_an_unknown_job_state_is_a_400_naming_state(served: ServedJob) -> None:
    for state in ("NOPE", "running", "", "RUNNING "):
        reply = http(served.base, f"/api/v1/jobs?state={quote(state)}")
        message = refused(reply, 400, "state", "bad_param")
        assert "RUNNING" in message  # the choices are listed
    listed = http(served.base, "/api/v1/jobs?state=RUNNING").body["jobs"]
    assert [j["job_id"] for j in listed] == [served.job_id]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"{", "body"),
        (b"\xff\xfe", "body"),
        (b"[]", "body"),
        (b'["cancel"]', "body"),
        (b"true", "body"),
        (b'"cancel"', "body"),
        (b'{"cancel": false, "colour": "red"}', "colour"),
        (b'{"cancel": "yes"}', "cancel"),
        (b'{"cancel": 1}', "cancel"),
        (b'{"cancel": null}', "cancel"),
        (b'{"directory": "relative/path"}', "directory"),
        (b'{"directory": ""}', "directory"),
        (b'{"directory": 5}', "directory"),
        (b'{"directory": "/tmp/with\\u0000nul"}', "directory"),
        (b'{"cancel": true, "directory": "/tmp/with\\u0000nul"}', "directory"),
    ],
)
def test_bad_savepoint_bodies_are_a_400_naming_the_field(
    served: ServedJob, body: bytes, field: str
) -> None:
    before = savepoints_taken(served)
    refused(post_savepoint(served, body), 400, field, "bad_body")
    # Refused before anything was done: no savepoint, and the job was not cancelled.
    assert savepoints_taken(served) == before
    assert detail(served)["state"] == "RUNNING"


def _address(served: ServedJob) -> tuple[str, int]:
    url = urlsplit(served.base)
    assert url.hostname == "127.0.0.1" and url.port
    return url.hostname, url.port


def _read_reply(sock: socket.socket, timeout_s: float) -> bytes:
    """What the server answered on ``sock``, up to the end of its (JSON) body."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _parse(data: bytes) -> HttpReply:
    head, _, raw = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return HttpReply(status, headers, raw)


def test_a_huge_body_is_refused_with_a_413_without_reading_it(served: ServedJob) -> None:
    """A body declared over the limit is refused at once, unread; one streamed without a
    length is refused once past the limit, long before its 10 MB are sent. Nothing is
    taken, and the coordinator answers others all along."""
    huge = 10 << 20
    before = savepoints_taken(served)
    head = (
        f"POST /api/v1/jobs/{served.job_id}/savepoints HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
    )
    with socket.create_connection(_address(served), timeout=10) as sock:
        sock.sendall(f"{head}Content-Length: {huge}\r\n\r\n".encode())
        start = time.monotonic()
        reply = _parse(_read_reply(sock, timeout_s=10))
        assert time.monotonic() - start < 5
    message = refused(reply, 413, "body", "too_large")
    assert str(MAX_BODY_BYTES) in message

    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent, answer = 0, b""
    with socket.create_connection(_address(served), timeout=10) as sock:
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        while sent < huge and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                answer += sock.recv(65536)
                if answer.rstrip().endswith(b"}"):
                    break
            elif writable:
                try:
                    sent += sock.send(chunk[sent % len(chunk) :])
                except BlockingIOError:
                    pass
                except OSError:  # closed: the answer is waiting to be read
                    sock.setblocking(True)
                    answer += _read_reply(sock, timeout_s=5)
                    break
            healthy(served)  # others are answered meanwhile
    refused(_parse(answer), 413, "body", "too_large")
    assert sent < huge / 2, f"the server read {sent} bytes of a refused body"
    assert savepoints_taken(served) == before
    healthy(served)


def test_unknown_paths_are_a_json_404(served: ServedJob) -> None:
    for path in (
        "/api/v1/nope",
        "/api/v2/jobs",
        f"/api/v1/jobs/{served.job_id}/nope",
        f"/api/v1/jobs/{served.job_id}/tasks",
        f"/api/v1/jobs/{served.job_id}/tasks/0",
        "/api/v1/jobs/x/y/z",
    ):
        for method in ("GET", "POST"):
            message = refused(http(served.base, path, method=method), 404, None, "not_found")
            assert path in message


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/v1/jobs", {"GET", "HEAD"}),
        ("DELETE", "/api/v1/health", {"GET", "HEAD"}),
        ("POST", "/api/v1/jobs/{job}", {"GET", "HEAD"}),
        ("GET", "/api/v1/jobs/{job}/cancel", {"POST"}),
        ("DELETE", "/api/v1/jobs/{job}/savepoints", {"POST"}),
        ("PATCH", "/api/v1/jobs/{job}/tasks/0/peek", {"GET", "HEAD", "DELETE"}),
        ("POST", "/api/v1/jobs/{job}/tasks/0/subtasks", {"GET", "HEAD"}),
    ],
)
def test_a_wrong_method_is_a_405_with_allow(
    served: ServedJob, method: str, path: str, allowed: set[str]
) -> None:
    path = path.format(job=served.job_id)
    reply = http(served.base, path, method=method)
    message = refused(reply, 405, None, "method_not_allowed")
    assert message.startswith(f"{method} {path}")
    assert set(re.split(r",\s*", reply.headers["allow"])) == allowed


def test_after_all_that_the_job_runs_on(served: ServedJob) -> None:
    """(Last in the module.) The job was neither cancelled nor stalled by the bad input:
    still its first attempt, no failure, and its records keep rising."""
    first = detail(served)
    assert (first["state"], first["attempt"], first["restarts"], first["error"]) == (
        "RUNNING",
        0,
        0,
        None,
    )
    poll_until_sync(
        lambda: detail(served)["totals"]["records_out"],
        until=lambda n: n > first["totals"]["records_out"] + 1000,
        timeout_s=30,
        what="the job's records to keep rising",
    )
    assert savepoints_taken(served) == []
