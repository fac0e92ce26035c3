"""The dashboard's settings from the command line: where a coordinator may serve HTTP
(loopback only without keys, TLS beyond loopback with keys), the HTTP token written by
``mesh keys generate``, HTTPS with a certificate, and ``mesh run`` saying where its
dashboard is."""

from __future__ import annotations

import shutil
import ssl
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from mesh.transport.keys import generate_keys, http_token_path
from tests.e2e.test_keys_cli import JOB, mesh
from tests.helpers import write_job
from tests.tools import require_binary
from tests.web import serving_cluster


def test_keys_generate_writes_an_http_token_and_adds_one_to_older_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = mesh("keys", "generate", str(keys), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    token = http_token_path(keys)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) >= 32 and "HTTP token" in made.stdout
    # Keys made before the dashboard have no token: generating again adds one, keeps keys.
    secret = (keys / "coordinator.key_secret").read_text()
    token.unlink()
    again = mesh("keys", "generate", str(keys), cwd=tmp_path)
    assert again.returncode == 0 and "kept" in again.stdout
    assert token.exists() and (keys / "coordinator.key_secret").read_text() == secret
    # With everything there, nothing is replaced without --force.
    third = mesh("keys", "generate", str(keys), cwd=tmp_path)
    assert third.returncode == 2 and "exist already" in third.stderr


@pytest.mark.parametrize(
    ("keyed", "args", "said"),
    [
        (False, ["--http", "0.0.0.0:0"], "refusing to serve HTTP on every interface"),
        (True, ["--http", "0.0.0.0:0"], "without TLS: the dashboard's token would cross"),
        (False, ["--http", "127.0.0.1"], "expected HOST:PORT"),
        (False, ["--http", "127.0.0.1:0", "--http-tls-cert", "c.pem"], "go together"),
        (True, ["--http", "127.0.0.1:0"], "no HTTP token"),
    ],
)
def test_a_coordinator_refuses_to_expose_its_api(
    tmp_path: Path, keyed: bool, args: list[str], said: str
) -> None:
    extra = []
    if keyed:
        generate_keys(tmp_path / "keys", ["coordinator", "node", "client"])  # no token
        extra = ["--keys", str(tmp_path / "keys")]
        if "no HTTP token" not in said:
            (tmp_path / "keys" / "http.token").write_text("t" * 43)
    run = mesh(
        "coordinator", "--state-dir", str(tmp_path / "st"), *extra, *args, cwd=tmp_path, timeout=30
    )
    assert run.returncode == 2, run.stderr
    assert said in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def _self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = require_binary(
        Path(found) if (found := shutil.which("openssl")) else None, "openssl", "OPENSSL"
    )
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            str(openssl),
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_a_bad_certificate_is_refused_at_start(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    key.write_text("not a key\n")
    run = mesh(
        "coordinator",
        *("--state-dir", str(tmp_path / "st"), "--http", "127.0.0.1:0"),
        *("--http-tls-cert", str(cert), "--http-tls-key", str(key)),
        cwd=tmp_path,
        timeout=30,
    )
    assert run.returncode == 2 and "cannot load http_tls_cert" in run.stderr, run.stderr


def test_https_with_a_certificate_and_the_token(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    keys = tmp_path / "keys"
    generate_keys(keys, ["coordinator", "node", "client"])
    mesh("keys", "generate", str(keys), cwd=tmp_path)  # adds the token
    token = http_token_path(keys).read_text().strip()
    tls = ["--http-tls-cert", str(cert), "--http-tls-key", str(key)]
    with serving_cluster(tmp_path, keys=keys, coordinator_args=tls) as served:
        assert served.base.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(
            f"{served.base}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            assert answer.status == 200
            assert served.job_id in answer.read().decode()
        # Plain HTTP to the HTTPS port gets nothing served.
        with pytest.raises(OSError):
            urllib.request.urlopen(
                served.base.replace("https", "http") + "/api/v1/health", timeout=10
            )


def test_mesh_run_says_where_its_dashboard_is(tmp_path: Path) -> None:
    write_job(tmp_path, JOB)
    run = mesh("run", "job.py", "--nodes", "1", "--http", "127.0.0.1:0", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("dashboard:")]
    assert line.startswith("dashboard: http://127.0.0.1:") and line.endswith("/")
    off = mesh("run", "job.py", "--nodes", "1", "--http", "off", cwd=tmp_path)
    assert off.returncode == 0 and "dashboard:" not in off.stderr
