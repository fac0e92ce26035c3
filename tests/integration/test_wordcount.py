"""Wordcount on a real coordinator and two real nodes (in-process, ephemeral ports).

The output must equal a plain-Python computation of the same answer, exactly, for
several parallelisms and for every partitioner.
"""

from __future__ import annotations

import collections
import random
import re
from pathlib import Path

import pytest

from tests.helpers import read_parts, run_job, write_job

WORD = re.compile(r"[a-z']+")
VOCABULARY = "stream river batch credit barrier node slot window key record watermark".split()


def make_text(directory: Path, files: int = 3, lines: int = 700) -> list[str]:
    rng = random.Random(11)
    directory.mkdir(parents=True, exist_ok=True)
    all_lines = []
    for n in range(files):
        text = []
        for _ in range(lines):
            words = rng.choices(VOCABULARY, k=rng.randint(0, 12))
            text.append(" ".join(w.upper() if rng.random() < 0.1 else w for w in words))
        all_lines += text
        (directory / f"text-{n}.txt").write_text("\n".join(text) + "\n")
    return all_lines


def expected_running_counts(lines: list[str]) -> collections.Counter[tuple[str, int]]:
    totals: collections.Counter[str] = collections.Counter()
    for line in lines:
        totals.update(WORD.findall(line.lower()))
    return collections.Counter((w, n) for w, total in totals.items() for n in range(1, total + 1))


HASH_JOB = """
    import re
    from mesh import Job, sinks, sources

    WORD = re.compile(r"[a-z']+")
    job = Job("wordcount", parallelism=2)
    lines = job.source(sources.TextFile("data/*.txt"))
    words = lines.flat_map(lambda line: WORD.findall(line.lower()))
    words.key_by(lambda w: w).count().sink(sinks.JsonLines("out"))
"""

MIXED_JOB = """
    import re
    from mesh import Job, sinks, sources

    WORD = re.compile(r"[a-z']+")
    job = Job("wordcount-mixed", parallelism=2)
    lines = job.source(sources.TextFile("data/*.txt")).set_parallelism(1)
    lowered = lines.rebalance().map(str.lower).name("lower")          # rebalance 1 -> p
    words = lowered.flat_map(lambda line: WORD.findall(line))         # forward, chained
    shuffled = words.shuffle().map(lambda w: w).disable_chaining()    # shuffle p -> p
    rescaled = shuffled.rescale().filter(lambda w: True).set_parallelism(3)  # rescale p -> 3
    counts = rescaled.key_by(lambda w: w).count()                     # hash 3 -> p
    counts.forward().map(lambda r: r).sink(sinks.JsonLines("out"))    # forward, chained
    # A broadcast branch: every subtask of the sink gets every distinct line length.
    lines.map(len).filter(lambda n: n == 0).broadcast().sink(sinks.Collect()).set_parallelism(2)
"""


@pytest.mark.asyncio
@pytest.mark.parametrize("parallelism", [1, 2, 3])
async def test_wordcount_matches_plain_python(
    inprocess_cluster, tmp_path: Path, parallelism: int
) -> None:
    lines = make_text(tmp_path / "data")
    job_file = write_job(tmp_path, HASH_JOB)
    async with inprocess_cluster(nodes=2, slots=2) as cluster:
        status, _ = await run_job(
            cluster.address, job_file, parallelism=parallelism, base_dir=tmp_path
        )

    assert status["state"] == "FINISHED", status["error"]
    got = collections.Counter((r["key"], r["count"]) for r in read_parts(tmp_path / "out"))
    assert got == expected_running_counts(lines)
    sink_task = status["tasks"][-1]
    assert sink_task["parallelism"] == parallelism
    assert {s["node"] for t in status["tasks"] for s in t["subtasks"]} <= {"node-1", "node-2"}
    if parallelism > 1:  # spread placement uses both nodes
        assert {s["node"] for s in sink_task["subtasks"]} == {"node-1", "node-2"}
    assert status["totals"]["records_in"] == len(lines)
    assert status["totals"]["records_out"] == sum(got.values())


@pytest.mark.asyncio
async def test_every_partitioner_gives_the_exact_answer(inprocess_cluster, tmp_path: Path) -> None:
    lines = make_text(tmp_path / "data", files=2, lines=500)
    job_file = write_job(tmp_path, MIXED_JOB)
    async with inprocess_cluster(nodes=2, slots=3) as cluster:
        status, collected = await run_job(cluster.address, job_file, base_dir=tmp_path)

    assert status["state"] == "FINISHED", status["error"]
    partitionings = sorted(e["partitioning"] for e in status["edges"])
    assert partitionings == ["broadcast", "hash", "rebalance", "rebalance", "rescale", "shuffle"]
    got = collections.Counter((r["key"], r["count"]) for r in read_parts(tmp_path / "out"))
    assert got == expected_running_counts(lines)
    empty_lines = sum(1 for line in lines if not line)
    assert collected == [0] * (2 * empty_lines)  # broadcast: both sink subtasks got each one
