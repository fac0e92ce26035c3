"""The connector example (examples/custom_connector.py: a source of its own and a
two-phase CSV sink, written against ``mesh.connectors`` only) gives every order exactly
once: run with ``mesh run`` as a user would, after a node running it is killed -9
mid-stream, and restored from a savepoint at another parallelism. No hidden
(in-progress or pending) file is left behind."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.client.client import open_client, prepare_submission
from tests.helpers import poll_until, wait_for_state, write_job
from tests.integration.test_exactly_once import wait_for_checkpoints

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_connector.py"

# The example's connectors in a job with more, slower input (about 4 s at parallelism
# 2), so that a kill or a savepoint lands mid-stream; checkpoints every 200 ms.
SLOW_TOTAL = 3000
SLOW_JOB = f"""
    from custom_connector import CsvFiles, OrdersApi, to_row
    from mesh import Job

    job = Job("orders-slow", parallelism=2, checkpoint_interval="200ms")
    api = OrdersApi(total={SLOW_TOTAL}, page_size=20, split_size=300, latency=0.05)
    orders = job.source(api, name="orders API").uid("orders-api")
    csv_files = CsvFiles("out/orders", columns=["order", "customer", "total"])
    orders.map(to_row).sink(csv_files).uid("orders-csv")
"""


def expected_rows(total: int) -> list[dict[str, str]]:
    """What the example's API and ``to_row`` make of orders 0 .. total-1 (CSV text)."""
    return [
        {"order": str(i), "customer": f"c{i % 7}", "total": f"{(100 + i * 37 % 900) / 100:.2f}"}
        for i in range(total)
    ]


def committed(directory: Path) -> list[dict[str, str]]:
    """The rows of every committed part file (each starts with the header row)."""
    rows: list[dict[str, str]] = []
    for path in sorted(directory.glob("part-*.csv")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == ["order", "customer", "total"], path.name
            rows.extend(reader)
    return rows


def assert_exactly_once(directory: Path, total: int) -> None:
    rows = committed(directory)
    repeated = {order: n for order, n in Counter(r["order"] for r in rows).items() if n > 1}
    assert repeated == {}, f"{len(repeated)} orders committed more than once"
    assert sorted(rows, key=lambda r: int(r["order"])) == expected_rows(total)
    leftovers = sorted(p.name for p in directory.iterdir() if not p.name.startswith("part-"))
    assert leftovers == [], "hidden files left behind"


def slow_job(tmp_path: Path) -> Path:
    """The slow job file, with the example beside it (shipped with it to the nodes)."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    shutil.copy(EXAMPLE, jobs / "custom_connector.py")
    return write_job(jobs, SLOW_JOB, "slow_orders.py")


async def wait_for_committed_rows(directory: Path) -> int:
    """Until a checkpoint's rows are visible (committed); how many there are."""
    return await poll_until(
        lambda: len(committed(directory)) if directory.is_dir() else 0,
        timeout_s=30,
        what=f"committed rows in {directory}",
    )


def test_mesh_run_commits_every_order_once(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "examples" / EXAMPLE.name)
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "run", "examples/custom_connector.py"],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED" in result.stderr and "2,000 records in, 2,000 out" in result.stderr
    out = tmp_path / "out" / "orders"
    assert_exactly_once(out, 2000)
    # Both subtasks committed, at several checkpoints: part-<job>-orders-csv-<i>-<n>.csv
    names = [p.name for p in out.glob("part-*.csv")]
    assert {n.split("-orders-csv-")[1].split("-")[0] for n in names} == {"0", "1"}
    assert len(names) > 2


@pytest.mark.slow
def test_a_node_killed_mid_stream_loses_and_repeats_no_order(
    local_cluster: Any, tmp_path: Path
) -> None:
    job_file = slow_job(tmp_path)
    out = tmp_path / "out" / "orders"
    cluster = local_cluster(nodes=3, slots=1)  # one node to spare

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with open_client(cluster.address) as client:
            job_id = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            status = await wait_for_checkpoints(client, job_id, 2)
            seen = await wait_for_committed_rows(out)
            used = {s["node"] for t in status["tasks"] for s in t["subtasks"]}
            cluster.kill(next(n for n in cluster.nodes if n.name in used), signal.SIGKILL)
            final = await wait_for_state(client, job_id, ("FINISHED", "FAILED"), timeout_s=60)
            return seen, final

    seen, final = anyio.run(scenario)
    assert 0 < seen < SLOW_TOTAL, "the kill did not land mid-stream"
    assert final["state"] == "FINISHED", final["error"]
    assert final["restarts"] >= 1 and "chk-" in (final["restored_from"] or "")
    assert_exactly_once(out, SLOW_TOTAL)


@pytest.mark.slow
def test_restored_from_a_savepoint_at_parallelism_3_every_order_once(
    local_cluster: Any, tmp_path: Path
) -> None:
    job_file = slow_job(tmp_path)
    out = tmp_path / "out" / "orders"
    cluster = local_cluster(nodes=2, slots=3)

    async def scenario() -> tuple[str, str, int, dict[str, Any]]:
        async with open_client(cluster.address) as client:
            first = await client.submit(prepare_submission(job_file, base_dir=tmp_path))
            await wait_for_checkpoints(client, first, 2)
            await wait_for_committed_rows(out)
            savepoint = await client.savepoint(
                first, directory=str(tmp_path / "savepoints"), cancel=True
            )
            await wait_for_state(client, first, ("CANCELED",))
            seen = len(committed(out))
            resumed = prepare_submission(
                job_file, parallelism=3, base_dir=tmp_path, restore_from=savepoint
            )
            second = await client.submit(resumed)
            final = await wait_for_state(client, second, ("FINISHED", "FAILED"), timeout_s=60)
            return first, second, seen, final

    first, second, seen, final = anyio.run(scenario)
    assert 0 < seen < SLOW_TOTAL, "the savepoint was not taken mid-stream"
    assert final["state"] == "FINISHED", final["error"]
    assert_exactly_once(out, SLOW_TOTAL)
    # Both jobs committed rows, and the second one from three subtasks.
    jobs = {p.name.split("-orders-csv-")[0].removeprefix("part-") for p in out.glob("part-*")}
    assert jobs == {first, second}
    subtasks = {p.name.split("-orders-csv-")[1].split("-")[0] for p in out.glob(f"part-{second}-*")}
    assert subtasks == {"0", "1", "2"}
