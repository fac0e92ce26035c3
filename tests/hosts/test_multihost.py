"""A cluster across hosts: a coordinator and three nodes, each in a network namespace of
its own with its own address, joined by a bridge (tests/netns.py); the client runs
``mesh`` from a fifth host. Jobs must produce exactly their reference output."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import poll_until_sync, read_parts
from tests.multihost import HostCluster
from tests.netns import network_lab, require_network_lab

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["coord", "n1", "n2", "n3", "client"]

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


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[HostCluster]:
    require_network_lab("nft")
    with network_lab(HOSTS) as lab:
        cluster = HostCluster(lab, tmp_path, coordinator_host="coord")
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
        env = {**HEARTBEATS, "MESH_CHECKPOINT_TIMEOUT": "2s"}
        cluster = HostCluster(lab, tmp_path, coordinator_host="coord", env=env)
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
    # Records between the two stop; checkpoints expire (the coordinator's timeout is 2 s
    # here) and after three in a row the job is restarted.
    restarted = poll_until_sync(
        lambda: cluster.status("client", job_id),
        until=lambda st: st["restarts"] >= 1,
        timeout_s=60,
        what="the job restarted",
    )
    assert "checkpoints in a row failed" in str(restarted["failures"])
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
        cluster = HostCluster(lab, tmp_path, coordinator_host="coord")
        try:
            cluster.start_coordinator()
            cluster.wait_ready([cluster.start_node(h, wait=False) for h in ("n1", "n2")])
            captured = _capture_run(cluster, tmp_path / "plain.pcap")
        finally:
            cluster.close()
    assert b"canary-" in captured and b'"secret_field"' in captured
