"""A cluster across hosts: a coordinator and three nodes, each in a network namespace of
its own with its own address, joined by a bridge (tests/netns.py); the client runs
``mesh`` from a fifth host. Jobs must produce exactly their reference output."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

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
