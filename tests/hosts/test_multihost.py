"""A cluster across hosts: a coordinator and three nodes, each in a network namespace of
its own with its own address, joined by a bridge (tests/netns.py); the client runs
``mesh`` from a fifth host, and a sixth host holds keys nobody allowed. With CURVE keys
every socket is authenticated and encrypted; the keyless clusters run with
``--insecure``. Jobs must produce exactly their reference output."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import poll_until_sync, read_parts
from tests.multihost import HostCluster
from tests.netns import network_lab, require_network_lab

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["coord", "n1", "n2", "n3", "client", "rogue"]
INSECURE = ["--insecure"]

SEQUENCE = """
    from mesh import Job, sinks, sources

    job = Job("sequence", parallelism=3, checkpoint_interval="300ms")
    (
        job.source(sources.Generator(lambda i: {"seq": i}, count=30_000, rate=6_000))
        .uid("numbers")
        .key_by(lambda r: r["seq"] % 17)
        .map(lambda r: {"seq": r["seq"], "bucket": r["seq"] % 17})
        .uid("tag")
        .sink(sinks.JsonLines("out/sequence"))
        .uid("out")
    )
"""


def _keys(directory: Path) -> Path:
    """A fresh key directory made by ``mesh keys generate``."""
    done = subprocess.run(
        [sys.executable, "-m", "mesh", "keys", "generate", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[HostCluster]:
    """A CURVE-protected cluster across three node hosts."""
    require_network_lab("nft")
    keys = ["--keys", str(_keys(tmp_path / "keys"))]
    with network_lab(HOSTS) as lab:
        cluster = HostCluster(
            lab, tmp_path, coordinator_host="coord", extra_args=keys, client_args=keys
        )
        try:
            cluster.start_coordinator()
            nodes = [cluster.start_node(h, wait=False) for h in ("n1", "n2", "n3")]
            cluster.wait_ready(nodes)
            yield cluster
        finally:
            cluster.close()


def _submit(cluster: HostCluster, job_file: str) -> str:
    return cluster.mesh("client", "submit", job_file).strip().splitlines()[-1]


def _finished(cluster: HostCluster, job_id: str, timeout_s: float = 120) -> dict[str, object]:
    return poll_until_sync(
        lambda: cluster.status("client", job_id),
        until=lambda st: st["state"] in ("FINISHED", "FAILED", "CANCELED"),
        timeout_s=timeout_s,
        what=f"job {job_id} to end",
    )


@pytest.mark.slow
def test_jobs_run_exactly_once_across_three_hosts(hosts: HostCluster) -> None:
    work = hosts.work_dir
    shutil.copytree(ROOT / "examples", work / "examples")
    (work / "sequence.py").write_text(
        "\n".join(line[4:] if line.startswith("    ") else line for line in SEQUENCE.splitlines())
    )
    wordcount = _submit(hosts, "examples/wordcount.py")
    sequence = _submit(hosts, "sequence.py")
    for job_id, parallelism in ((wordcount, 2), (sequence, 3)):
        status = _finished(hosts, job_id)
        assert status["state"] == "FINISHED", status
        nodes = {s["node"] for t in status["tasks"] for s in t["subtasks"]}  # type: ignore[index]
        assert len(nodes) == parallelism and nodes <= {"n1", "n2", "n3"}  # spread over hosts

    words = Counter(
        word
        for path in sorted((work / "examples" / "data").glob("*.txt"))
        for word in re.findall(r"[a-z']+", path.read_text().lower())
    )
    counts = read_parts(work / "out" / "wordcount")
    finals: dict[str, int] = {}
    for row in counts:
        finals[row["key"]] = max(finals.get(row["key"], 0), row["count"])
    assert finals == dict(words)
    assert len(counts) == sum(words.values())  # one running count per word seen

    seen = sorted(r["seq"] for r in read_parts(work / "out" / "sequence"))
    assert seen == list(range(30_000))


HEARTBEATS = {"MESH_HEARTBEAT_INTERVAL": "200ms", "MESH_HEARTBEAT_TIMEOUT": "1s"}


@pytest.fixture
def partitionable(tmp_path: Path) -> Iterator[HostCluster]:
    """Three nodes with one slot... each, quick heartbeats: losing one still leaves enough."""
    require_network_lab("nft")
    with network_lab(HOSTS) as lab:
        env = dict(HEARTBEATS)
        cluster = HostCluster(lab, tmp_path, coordinator_host="coord", env=env, extra_args=INSECURE)
        try:
            cluster.start_coordinator()
            nodes = [cluster.start_node(h, slots=2, wait=False) for h in ("n1", "n2", "n3")]
            cluster.wait_ready(nodes)
            yield cluster
        finally:
            cluster.close()


def _write_sequence(cluster: HostCluster, count: int, rate: int) -> None:
    source = SEQUENCE.replace("count=30_000, rate=6_000", f"count={count}, rate={rate}")
    (cluster.work_dir / "sequence.py").write_text(
        "\n".join(line[4:] if line.startswith("    ") else line for line in source.splitlines())
    )


def _running_with_a_checkpoint(cluster: HostCluster, job_id: str) -> dict[str, object]:
    return poll_until_sync(
        lambda: cluster.status("client", job_id),
        until=lambda st: (
            st["state"] == "RUNNING" and bool((st.get("checkpoints") or {}).get("completed"))
        ),  # type: ignore[union-attr]
        timeout_s=60,
        what="the job running with a completed checkpoint",
    )


@pytest.mark.slow
def test_a_node_cut_off_from_the_coordinator_is_failed_over_and_commits_nothing_later(
    partitionable: HostCluster,
) -> None:
    cluster = partitionable
    _write_sequence(cluster, count=24_000, rate=3_000)
    job_id = _submit(cluster, "sequence.py")
    status = _running_with_a_checkpoint(cluster, job_id)
    placed = {s["node"] for t in status["tasks"] for s in t["subtasks"]}  # type: ignore[index]
    victim = sorted(placed)[0]
    cluster.lab.cut(victim, "coord")  # its peers still reach it
    final = _finished(cluster, job_id, timeout_s=120)
    assert final["state"] == "FINISHED", final
    assert final["attempt"] >= 1 and final["restarts"] >= 1
    assert any(victim in str(f) for f in final["failures"])  # type: ignore[union-attr]
    # Healed, the old node may come back, but its subtasks of the old attempt are fenced:
    # nothing it held is committed.
    cluster.lab.heal(victim)
    poll_until_sync(
        lambda: [n["node_id"] for n in orjson.loads(cluster.mesh("client", "nodes", "--json"))],
        until=lambda ids: victim in ids,
        timeout_s=30,
        what=f"{victim} registered with the coordinator again",
    )
    seen = sorted(r["seq"] for r in read_parts(cluster.work_dir / "out" / "sequence"))
    assert seen == list(range(24_000))


@pytest.mark.slow
def test_a_node_cut_off_from_one_peer_gets_the_job_restarted_not_wedged(
    partitionable: HostCluster,
) -> None:
    cluster = partitionable
    _write_sequence(cluster, count=24_000, rate=3_000)
    job_id = _submit(cluster, "sequence.py")
    status = _running_with_a_checkpoint(cluster, job_id)
    placed = sorted({s["node"] for t in status["tasks"] for s in t["subtasks"]})  # type: ignore[index]
    cluster.lab.cut(placed[0], placed[1])  # both still reach the coordinator
    # Their links' pings go unanswered; the coordinator still hears from both, so after
    # its heartbeat timeout the nodes fail the attempt themselves and it is restarted.
    restarted = poll_until_sync(
        lambda: cluster.status("client", job_id),
        until=lambda st: st["restarts"] >= 1,
        timeout_s=60,
        what="the job restarted",
    )
    assert "link to node" in str(restarted["failures"]), restarted["failures"]
    cluster.lab.heal(placed[0])
    final = _finished(cluster, job_id, timeout_s=120)
    assert final["state"] == "FINISHED", final
    seen = sorted(r["seq"] for r in read_parts(cluster.work_dir / "out" / "sequence"))
    assert seen == list(range(24_000))


CANARY_JOB = """
    from mesh import Job, sinks, sources

    job = Job("canary", parallelism=2)
    (
        job.source(sources.Collection([{"secret_field": f"canary-{i}"} for i in range(2000)]))
        .key_by(lambda r: r["secret_field"])
        .sink(sinks.JsonLines("out/canary"))
    )
"""


def _capture_run(cluster: HostCluster, pcap: Path) -> bytes:
    (cluster.work_dir / "canary.py").write_text(
        "\n".join(line[4:] if line.startswith("    ") else line for line in CANARY_JOB.splitlines())
    )
    with cluster.lab.capture(pcap):
        job_id = _submit(cluster, "canary.py")
        status = _finished(cluster, job_id)
    assert status["state"] == "FINISHED", status
    nodes = {s["node"] for t in status["tasks"] for s in t["subtasks"]}  # type: ignore[index]
    assert len(nodes) == 2, nodes  # records cross between the two hosts
    assert len(read_parts(cluster.work_dir / "out" / "canary")) == 2000
    return pcap.read_bytes()


@pytest.mark.slow
def test_without_keys_records_cross_the_wire_in_plaintext(tmp_path: Path) -> None:
    """The control for the encrypted case: the capture does see the records."""
    require_network_lab("nft", "tcpdump")
    with network_lab(HOSTS) as lab:
        cluster = HostCluster(lab, tmp_path, coordinator_host="coord", extra_args=INSECURE)
        try:
            cluster.start_coordinator()
            cluster.wait_ready([cluster.start_node(h, wait=False) for h in ("n1", "n2")])
            captured = _capture_run(cluster, tmp_path / "plain.pcap")
        finally:
            cluster.close()
    assert b"canary-" in captured and b'"secret_field"' in captured


@pytest.mark.slow
def test_with_keys_no_record_crosses_the_wire_in_plaintext(hosts: HostCluster) -> None:
    captured = _capture_run(hosts, hosts.work_dir / "curve.pcap")
    assert len(captured) > 10_000  # the capture saw the traffic
    assert b"canary-" not in captured and b"secret_field" not in captured
    assert b'"job_id"' not in captured and b"heartbeat" not in captured.lower()


@pytest.mark.slow
def test_a_host_with_keys_nobody_allowed_cannot_register_or_submit(hosts: HostCluster) -> None:
    # Its own key pairs, and the coordinator's public key (public, so anyone may have it).
    other_dir = _keys(hosts.work_dir / "other-keys")
    shutil.copy(hosts.work_dir / "keys" / "coordinator.key", other_dir / "coordinator.key")
    other = ["--keys", str(other_dir)]
    rogue_address = hosts.lab.addresses["rogue"]
    rogue = hosts._spawn(
        "rogue",
        "rogue",
        [
            "node",
            "--coordinator",
            hosts.address,
            "--node-id",
            "rogue",
            "--bind-host",
            rogue_address,
            "--advertise-host",
            rogue_address,
            "--state-dir",
            str(hosts.work_dir / "rogue"),
            *other,
        ],
    )
    coordinator = hosts.daemons["coordinator"]
    poll_until_sync(
        coordinator.log,
        until=lambda log: rogue_address in log and "refused" in log,
        timeout_s=30,
        what="the coordinator to log the refused node with its address",
    )
    assert rogue.process.poll() is None and not rogue.ready  # still trying, never ready
    (hosts.work_dir / "sequence.py").write_text(
        "\n".join(line[4:] if line.startswith("    ") else line for line in SEQUENCE.splitlines())
    )
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            hosts.lab.namespace("rogue"),
            sys.executable,
            "-m",
            "mesh",
            "submit",
            "sequence.py",
            "--coordinator",
            hosts.address,
            *other,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=hosts.work_dir,
    )
    assert done.returncode != 0
    assert "did not accept this client's key" in done.stderr, done.stderr
    nodes = orjson.loads(hosts.mesh("client", "nodes", "--json"))
    assert sorted(n["node_id"] for n in nodes) == ["n1", "n2", "n3"]
    assert orjson.loads(hosts.mesh("client", "list", "--json")) == []  # nothing runs


@pytest.mark.slow
def test_with_latency_and_loss_on_every_link_the_job_still_runs_exactly_once(
    tmp_path: Path,
) -> None:
    """50 ms ± 20 ms on every link (each daemon is reached through a delay proxy: this
    kernel has no netem) and 1 % of the packets dropped (nftables) on every host."""
    require_network_lab("nft")
    with network_lab(HOSTS) as lab:
        cluster = HostCluster(
            lab, tmp_path, coordinator_host="coord", extra_args=INSECURE, latency=(50, 20)
        )
        try:
            cluster.start_coordinator()
            nodes = [cluster.start_node(h, slots=2, wait=False) for h in ("n1", "n2", "n3")]
            cluster.wait_ready(nodes)
            log = cluster.daemons["coordinator"].log()
            for host in ("n1", "n2", "n3"):  # peers reach each node through its proxy
                assert f"at tcp://{cluster.dial_host(host)}:" in log, log
            _lossy_sequence_run(cluster)
        finally:
            cluster.close()


def _lossy_sequence_run(cluster: HostCluster) -> None:
    for host in HOSTS:
        cluster.lab.lose(host, 1)
    _write_sequence(cluster, count=24_000, rate=8_000)
    job_id = _submit(cluster, "sequence.py")
    final = _finished(cluster, job_id, timeout_s=120)
    assert final["state"] == "FINISHED", final
    seen = sorted(r["seq"] for r in read_parts(cluster.work_dir / "out" / "sequence"))
    assert seen == list(range(24_000))
    seconds = (final["processing_finished_ms"] - final["processing_started_ms"]) / 1000  # type: ignore[operator]
    print(f"\n24,000 records, 50±20 ms and 1% loss on every link: {24_000 / seconds:,.0f}/s")
