"""Keys from the command line: ``mesh keys generate``, daemons and clients with
``--keys``, SIGHUP reloading the allowed keys, and keyless daemons that refuse to be
reachable from other hosts."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.client.client import open_client
from mesh.client.local_cluster import LocalCluster
from mesh.transport.handshake import HandshakeFailed
from tests.helpers import poll_until, poll_until_sync, write_job

JOB = """
    from mesh import Job, sinks, sources

    job = Job("tiny")
    job.source(sources.Collection([1, 2, 3])).sink(sinks.Collect())
"""


def mesh(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_keys_generate_writes_secret_pairs_and_never_overwrites(tmp_path: Path) -> None:
    done = mesh("keys", "generate", "k", "--name", "node-a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    keys = tmp_path / "k"
    for name in ("coordinator", "node", "client", "node-a"):
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
        assert "secret-key" not in (keys / f"{name}.key").read_text()
        assert (keys / "public" / f"{name}.key").read_text() == (keys / f"{name}.key").read_text()
    before = (keys / "node.key_secret").read_text()
    again = mesh("keys", "generate", "k", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (keys / "node.key_secret").read_text() == before
    forced = mesh("keys", "generate", "k", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and (keys / "node.key_secret").read_text() != before


@pytest.mark.parametrize(
    "args",
    [
        ["coordinator", "--bind", "tcp://0.0.0.0:0"],
        ["node", "--bind-host", "0.0.0.0"],
        ["node", "--advertise-host", "10.1.2.3"],
        ["node", "--advertise-host", "0.0.0.0", "--insecure"],
    ],
)
def test_keyless_daemons_refuse_other_hosts_in_one_line(tmp_path: Path, args: list[str]) -> None:
    done = mesh(*args, "--state-dir", str(tmp_path / "state"), cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert ("--keys" in lines[0] and "--insecure" in lines[0]) or "peers can dial" in lines[0]


def test_insecure_lets_a_keyless_node_advertise_another_host(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on: the node keeps waiting
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "node.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    with open(log, "wb") as out:
        node = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mesh",
                "node",
                "--coordinator",
                f"tcp://127.0.0.1:{port}",
                "--advertise-host",
                "10.1.2.3",
                "--insecure",
                "--state-dir",
                str(tmp_path / "state"),
            ],
            env=env,
            stderr=out,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        poll_until_sync(
            lambda: "waiting for the coordinator" in log.read_text() or node.poll() is not None,
            timeout_s=30,
            what="the node to start",
        )
        assert node.poll() is None, log.read_text()
    finally:
        node.kill()
        node.wait()


@pytest.mark.asyncio
async def test_refused_clients_and_sighup_reloading_the_allowed_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert mesh("keys", "generate", str(keys), cwd=tmp_path).returncode == 0
    (keys / "public" / "client.key").unlink()  # clients not allowed yet
    job_file = write_job(tmp_path, JOB)
    with LocalCluster(
        nodes=1,
        slots=1,
        state_dir=tmp_path / "cluster",
        coordinator_args=["--keys", str(keys)],
        node_args=["--keys", str(keys)],
    ) as cluster:
        assert cluster.coordinator is not None
        address = cluster.address
        submit = mesh(
            "submit", str(job_file), "--coordinator", address, "--keys", str(keys), cwd=tmp_path
        )
        assert submit.returncode == 1
        assert submit.stderr.strip() == (
            f"error: the coordinator at {address} did not accept this client's key: check "
            "--keys (is its public key in the server's allow-list?)"
        )
        log = cluster.coordinator.log_path
        assert "CURVE-protected" in log.read_text()
        await poll_until(
            lambda: "refused a connection from 127.0.0.1" in log.read_text(),
            timeout_s=10,
            what="the coordinator logs the refused client with its address",
        )

        shutil.copy(keys / "client.key", keys / "public" / "client.key")
        cluster.kill(cluster.coordinator, signal.SIGHUP)

        async def listed() -> list[object] | None:
            try:
                async with open_client(address, keys=keys, timeout_s=2) as client:
                    return await client.list_jobs()
            except HandshakeFailed:
                return None

        assert (
            await poll_until(
                listed, timeout_s=15, what="the client let in", until=lambda v: v is not None
            )
            == []
        )
        assert "allowed keys reloaded" in log.read_text()
        assert cluster.coordinator.alive()
        done = mesh("list", "--coordinator", address, "--keys", str(keys), cwd=tmp_path)
        assert done.returncode == 0, done.stderr


def test_mesh_run_passes_its_keys_to_the_embedded_cluster(tmp_path: Path) -> None:
    assert mesh("keys", "generate", "k", cwd=tmp_path).returncode == 0
    write_job(tmp_path, JOB)
    state = tmp_path / "state"
    done = mesh("run", "job.py", "--keys", "k", "--state-dir", str(state), "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "FINISHED" in done.stderr
    for name in ("coordinator", "node-1"):
        assert "CURVE-protected" in (state / "logs" / f"{name}.log").read_text()
