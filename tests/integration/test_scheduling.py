"""Slot scheduling on real daemons: slot-sharing and co-location groups, spread and pack
placement, jobs that wait for slots, and co-location groups that cannot be placed.

Placement is read as a user reads it, with ``mesh status JOB --json`` and ``mesh nodes
--json`` run as subprocesses.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from mesh.client.client import open_client, prepare_submission
from mesh.errors import RemoteError
from tests.helpers import FINAL_STATES, poll_until, run_job, status_summary, write_job

# A job with two slot-sharing groups: the source (parallelism 2) in "default"; a keyed
# count and a map (parallelism 3, not chained, co-located in "g") and the sink
# (parallelism 2) in "heavy". It needs 2 + 3 = 5 slots. {source} is filled in: an
# unbounded rate-limited generator to look at it while it runs, or a bounded one.
GROUPS_JOB = """
from mesh import Job, sinks, sources

job = Job("groups", parallelism=2)
nums = job.source({source}).uid("src")
counts = (
    nums.key_by(lambda x: x % 5)
    .count()
    .uid("counter")
    .slot_sharing_group("heavy")
    .co_location_group("g")
    .set_parallelism(3)
)
pairs = (
    counts.map(lambda r: [r["key"], r["count"]])
    .uid("pairs")
    .disable_chaining()
    .co_location_group("g")
    .set_parallelism(3)
)
pairs.sink(sinks.Collect()).uid("out")
"""

BOUNDED_COUNT = 100  # keys 0..4, 20 records each

# Needs 2 slots in one group.
PAIR_JOB = """
from mesh import Job, sinks, sources

job = Job("pair", parallelism=2)
job.source(sources.Collection(list(range(20)))).map(lambda x: x + 1000).sink(sinks.Collect())
"""


# -- helpers ---------------------------------------------------------------------------------


async def mesh_cli(*args: str) -> str:
    """Run ``python -m mesh ARGS`` like a user would; returns stdout (exit code 0)."""
    env = {k: v for k, v in os.environ.items() if k != "MESH_COORDINATOR"}
    result = await anyio.run_process([sys.executable, "-m", "mesh", *args], check=False, env=env)
    assert result.returncode == 0, (args, result.returncode, result.stderr.decode())
    return result.stdout.decode()


async def cli_status(address: str, job_id: str) -> dict[str, Any]:
    return orjson.loads(await mesh_cli("status", job_id, "--json", "--coordinator", address))


async def cli_nodes(address: str) -> dict[str, dict[str, Any]]:
    nodes = orjson.loads(await mesh_cli("nodes", "--json", "--coordinator", address))
    return {n["node_id"]: n for n in nodes}


async def cli_wait_running(address: str, job_id: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll ``mesh status`` until the job and every one of its subtasks are RUNNING."""

    def running(status: dict[str, Any]) -> bool:
        assert status["state"] not in FINAL_STATES, (status["state"], status["error"])
        return status["state"] == "RUNNING" and all(
            s["state"] == "RUNNING" for t in status["tasks"] for s in t["subtasks"]
        )

    status: dict[str, Any] = await poll_until(
        lambda: cli_status(address, job_id),
        until=running,
        timeout_s=timeout_s,
        interval_s=0.1,
        what=f"job {job_id} and all its subtasks RUNNING",
        show=status_summary,
    )
    return status


def slots_of(status: dict[str, Any]) -> list[tuple[str, int]]:
    """(node, slot) of every placement entry, in the order status lists them."""
    return [(row["node"], row["slot"]) for row in status["placement"]]


def expected_placement(
    needed: dict[str, int], slots_per_node: dict[str, int], placement: str
) -> dict[str, list[tuple[str, int]]]:
    """The documented rule, computed independently: groups in order, each next slot from
    the node with the most free slots (ties by node id) for spread, from the first node
    (by id) with a free slot for pack; the lowest free slot number of that node."""
    free = {node: list(range(n)) for node, n in sorted(slots_per_node.items())}
    chosen: dict[str, list[tuple[str, int]]] = {}
    for group, count in needed.items():
        chosen[group] = []
        for _ in range(count):
            nodes = [n for n in free if free[n]]
            if placement == "spread":
                node = sorted(nodes, key=lambda n: (-len(free[n]), n))[0]
            else:
                node = nodes[0]
            chosen[group].append((node, free[node].pop(0)))
    return chosen


def check_placement(status: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Check the placement invariants of a status; returns each group's slots by index
    (slot k of a group = the (node, slot) holding subtask k of its tasks)."""
    tasks = status["tasks"]
    task_by_id = {t["id"]: t for t in tasks}
    # Slots needed, from the tasks list alone: the largest parallelism in each group.
    needed: dict[str, int] = {}
    for task in tasks:
        group = task["slot_sharing_group"]
        needed[group] = max(needed.get(group, 0), task["parallelism"])
    assert status["slots"]["needed"] == needed
    assert status["slots"]["total"] == sum(needed.values())
    assert status["slots"]["waiting"] is None

    # Every subtask of every task appears exactly once.
    listed = [s["subtask"] for row in status["placement"] for s in row["subtasks"]]
    all_subtasks = [s["subtask"] for t in tasks for s in t["subtasks"]]
    assert len(all_subtasks) == sum(t["parallelism"] for t in tasks)
    assert Counter(listed) == Counter(all_subtasks), (listed, all_subtasks)

    # One entry per (node, slot), in node/slot order; slots used == slots needed.
    keys = slots_of(status)
    assert len(set(keys)) == len(keys) == status["slots"]["total"]
    assert keys == sorted(keys)

    per_subtask = {s["subtask"]: s for t in tasks for s in t["subtasks"]}
    group_slots: dict[str, dict[int, tuple[str, int]]] = {g: {} for g in needed}
    for row in status["placement"]:
        where = (row["node"], row["slot"])
        task_ids = []
        for entry in row["subtasks"]:
            task_id, _, index = entry["subtask"].partition(".")
            task = task_by_id[int(task_id)]
            task_ids.append(task["id"])
            assert entry["index"] == int(index)
            assert entry["name"] == task["name"]
            assert entry["parallelism"] == task["parallelism"]
            # The placement table and the task's own subtask list agree.
            sub = per_subtask[entry["subtask"]]
            assert (sub["node"], sub["slot"]) == where, (entry, sub)
            assert sub["index"] == entry["index"]
            # A slot holds one sharing group, the one the row names.
            assert task["slot_sharing_group"] == row["slot_sharing_group"], row
        # No slot holds two subtasks of one task.
        assert len(task_ids) == len(set(task_ids)), row
        # Slot k of a group holds subtask k of every task of the group.
        indices = {e["index"] for e in row["subtasks"]}
        assert len(indices) == 1, row
        (k,) = indices
        group = row["slot_sharing_group"]
        assert k not in group_slots[group], (group, k)
        group_slots[group][k] = where
        members = [t for t in tasks if t["slot_sharing_group"] == group and t["parallelism"] > k]
        assert sorted(task_ids) == sorted(t["id"] for t in members), row
    return {g: [slots[k] for k in range(needed[g])] for g, slots in group_slots.items()}


def check_co_located(status: dict[str, Any], uids: set[str]) -> None:
    """Subtask i of each task holding one of ``uids`` runs in the same (node, slot)."""
    members = [t for t in status["tasks"] if {o["uid"] for o in t["operators"]} & uids]
    assert len(members) == len(uids), "the co-located operators must be separate tasks"
    parallelism = {t["parallelism"] for t in members}
    assert len(parallelism) == 1
    for index in range(parallelism.pop()):
        where = {(t["subtasks"][index]["node"], t["subtasks"][index]["slot"]) for t in members}
        assert len(where) == 1, (index, where)


def check_groups_job_graph(status: dict[str, Any]) -> None:
    """The groups job is the four tasks described at GROUPS_JOB."""
    shape = [
        (
            [o["uid"] for o in t["operators"]],
            t["slot_sharing_group"],
            t["parallelism"],
        )
        for t in status["tasks"]
    ]
    assert shape == [
        (["src"], "default", 2),
        (["counter"], "heavy", 3),
        (["pairs"], "heavy", 3),
        (["out"], "heavy", 2),
    ]
    assert status["slots"]["needed"] == {"default": 2, "heavy": 3}


def expected_groups_output() -> list[list[int]]:
    per_key = BOUNDED_COUNT // 5
    return sorted([key, n] for key in range(5) for n in range(1, per_key + 1))


async def all_free(address: str, nodes: dict[str, int], *, timeout_s: float = 20.0) -> None:
    """Poll ``mesh nodes --json`` until every node has all its slots free."""

    def free(found: dict[str, dict[str, Any]]) -> bool:
        return set(found) == set(nodes) and all(
            n["free"] == nodes[node_id] and n["used"] == 0 and n["jobs"] == []
            for node_id, n in found.items()
        )

    await poll_until(
        lambda: cli_nodes(address),
        until=free,
        timeout_s=timeout_s,
        interval_s=0.1,
        what=f"all slots free on {sorted(nodes)}",
    )


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sharing_and_co_location_groups_placed_on_three_nodes(
    local_cluster, tmp_path: Path
) -> None:
    job_file = write_job(
        tmp_path, GROUPS_JOB.format(source="sources.Generator(lambda i: i, rate=40)")
    )
    cluster = local_cluster(nodes=3, slots=2)
    address = cluster.address
    nodes = {"node-1": 2, "node-2": 2, "node-3": 2}

    async def scenario() -> None:
        submission = prepare_submission(job_file, base_dir=tmp_path)
        async with open_client(address) as client:
            reply = await client.submit_job(submission)
        assert reply.waiting is None
        job_id = reply.job_id

        status = await cli_wait_running(address, job_id)
        check_groups_job_graph(status)
        groups = check_placement(status)
        check_co_located(status, {"counter", "pairs"})
        # spread, groups in order: default -> node-1/0, node-2/0; heavy -> node-3/0,
        # node-1/1, node-2/1.
        assert groups == expected_placement(status["slots"]["needed"], nodes, "spread")
        assert groups == {
            "default": [("node-1", 0), ("node-2", 0)],
            "heavy": [("node-3", 0), ("node-1", 1), ("node-2", 1)],
        }

        # mesh nodes: while the job runs, each node's used slots are the job's slots there.
        per_node = Counter(node for node, _ in slots_of(status))
        found = await cli_nodes(address)
        assert sorted(found) == sorted(nodes)
        for node_id, node in found.items():
            assert node["slots"] == 2
            assert node["used"] == per_node[node_id], (node_id, node)
            assert node["free"] == 2 - per_node[node_id], (node_id, node)
            assert node["jobs"] == ([job_id] if per_node[node_id] else [])
            assert 0 <= node["last_heartbeat_ms_ago"] < 5000

        out = await mesh_cli("cancel", job_id, "--coordinator", address)
        assert out.strip().splitlines()[-1] == f"job {job_id} CANCELED"
        await all_free(address, nodes)
        # The ended job's status still shows where it ran.
        ended = await cli_status(address, job_id)
        assert ended["state"] == "CANCELED"
        assert ended["placement"] == status["placement"]

    anyio.run(scenario)


@pytest.mark.parametrize("placement", ["pack", "spread"])
def test_placement_strategy(local_cluster, tmp_path: Path, placement: str) -> None:
    args = ["--placement", "pack"] if placement == "pack" else []
    cluster = local_cluster(nodes=3, slots=2, coordinator_args=args)
    address = cluster.address
    nodes = {"node-1": 2, "node-2": 2, "node-3": 2}
    pair_file = write_job(tmp_path, PAIR_JOB, name="pair.py")
    groups_file = write_job(
        tmp_path,
        GROUPS_JOB.format(source=f"sources.Generator(lambda i: i, count={BOUNDED_COUNT})"),
        name="groups.py",
    )

    async def scenario() -> None:
        # A job needing 2 slots: pack puts both in node-1, spread on two nodes.
        status, collected = await run_job(address, pair_file, base_dir=tmp_path, timeout_s=30)
        assert status["state"] == "FINISHED", status["error"]
        assert sorted(collected) == [x + 1000 for x in range(20)]
        groups = check_placement(status)
        if placement == "pack":
            assert slots_of(status) == [("node-1", 0), ("node-1", 1)]
        else:
            assert slots_of(status) == [("node-1", 0), ("node-2", 0)]
        assert groups == expected_placement({"default": 2}, nodes, placement)
        await all_free(address, nodes)

        # Two groups (5 slots) with a co-location group, bounded: placement and output.
        status, collected = await run_job(address, groups_file, base_dir=tmp_path, timeout_s=30)
        assert status["state"] == "FINISHED", status["error"]
        assert sorted(collected) == expected_groups_output()
        check_groups_job_graph(status)
        groups = check_placement(status)
        check_co_located(status, {"counter", "pairs"})
        assert groups == expected_placement(status["slots"]["needed"], nodes, placement)
        per_node = Counter(node for node, _ in slots_of(status))
        if placement == "pack":
            assert groups == {
                "default": [("node-1", 0), ("node-1", 1)],
                "heavy": [("node-2", 0), ("node-2", 1), ("node-3", 0)],
            }
            assert per_node == {"node-1": 2, "node-2": 2, "node-3": 1}
        else:
            assert per_node == {"node-1": 2, "node-2": 2, "node-3": 1}
            # Each group is spread over distinct nodes.
            assert all(len({n for n, _ in slots}) == len(slots) for slots in groups.values())
        await all_free(address, nodes)

    anyio.run(scenario)


@pytest.mark.slow
def test_job_waits_for_slots_until_a_node_joins(local_cluster, tmp_path: Path) -> None:
    job_file = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("wide", parallelism=3)
        nums = job.source(sources.Collection(list(range(30)))).uid("src")
        nums.map(lambda x: x * x).uid("square").slot_sharing_group("other").sink(
            sinks.Collect()
        ).uid("out")
        """,
    )
    cluster = local_cluster(nodes=2, slots=2)
    address = cluster.address

    async def submit_and_watch() -> tuple[str, str]:
        submission = prepare_submission(job_file, base_dir=tmp_path)
        async with open_client(address) as client:
            reply = await client.submit_job(submission)
        waiting = reply.waiting
        assert waiting is not None
        assert "job needs 6 slot(s) (default: 3, other: 3)" in waiting
        assert "the cluster has 4 free" in waiting
        assert "node-1 offers 2 free of 2" in waiting
        assert "node-2 offers 2 free of 2" in waiting
        # It keeps waiting (a few polls), holding no slots.
        for poll in range(3):
            status = await cli_status(address, reply.job_id)
            assert status["state"] == "SCHEDULING"
            assert status["slots"] == {
                "needed": {"default": 3, "other": 3},
                "total": 6,
                "waiting": waiting,
            }
            assert status["placement"] == []
            assert all(
                s["node"] is None and s["slot"] is None
                for t in status["tasks"]
                for s in t["subtasks"]
            )
            if poll == 0:
                found = await cli_nodes(address)
                assert {n: (v["free"], v["used"], v["jobs"]) for n, v in found.items()} == {
                    "node-1": (2, 0, []),
                    "node-2": (2, 0, []),
                }
            await anyio.sleep(0.1)
        return reply.job_id, waiting

    job_id, _ = anyio.run(submit_and_watch)

    cluster.add_node(slots=2)  # node-3: now 6 slots are free

    async def finish() -> tuple[dict[str, Any], list[Any]]:
        async with open_client(address) as client:

            def finished(status: dict[str, Any]) -> bool:
                assert status["state"] in ("SCHEDULING", "RUNNING", "FINISHED"), status
                return status["state"] == "FINISHED"

            await poll_until(
                lambda: client.status(job_id),
                until=finished,
                timeout_s=30,
                what=f"job {job_id} FINISHED",
                show=status_summary,
            )
            collected: list[Any] = []
            offset = 0
            with anyio.fail_after(10):
                while True:
                    records, offset, complete = await client.fetch_collected(job_id, offset)
                    collected.extend(records)
                    if complete:
                        break
        return await cli_status(address, job_id), collected

    status, collected = anyio.run(finish)
    assert status["state"] == "FINISHED", status["error"]
    assert status["error"] is None
    assert sorted(collected) == [x * x for x in range(30)]
    groups = check_placement(status)
    assert groups == {
        "default": [("node-1", 0), ("node-2", 0), ("node-3", 0)],
        "other": [("node-1", 1), ("node-2", 1), ("node-3", 1)],
    }
    assert "node-3" in {node for node, _ in slots_of(status)}


def test_co_location_group_across_sharing_groups_is_refused(local_cluster, tmp_path: Path) -> None:
    spans = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("spans", parallelism=1)
        nums = job.source(sources.Collection([1, 2, 3])).uid("src").co_location_group("g")
        nums.map(lambda x: x).uid("mapper").slot_sharing_group("heavy").co_location_group(
            "g"
        ).sink(sinks.Collect())
        """,
        name="spans.py",
    )
    unequal = write_job(
        tmp_path,
        """
        from mesh import Job, sinks, sources

        job = Job("unequal", parallelism=1)
        nums = job.source(sources.Collection([1, 2, 3])).uid("src").co_location_group("g")
        nums.map(lambda x: x).uid("mapper").set_parallelism(2).co_location_group("g").sink(
            sinks.Collect()
        )
        """,
        name="unequal.py",
    )
    cluster = local_cluster(nodes=1, slots=4)
    address = cluster.address

    async def scenario() -> None:
        async with open_client(address) as client:
            with pytest.raises(RemoteError) as spans_error:
                await client.submit_job(prepare_submission(spans, base_dir=tmp_path))
            with pytest.raises(RemoteError) as unequal_error:
                await client.submit_job(prepare_submission(unequal, base_dir=tmp_path))
        message = str(spans_error.value)
        assert "co-location group 'g' spans slot-sharing groups" in message
        assert "src in 'default'" in message and "mapper in 'heavy'" in message
        assert spans_error.value.code == "bad_co_location"
        message = str(unequal_error.value)
        assert "co-location group 'g' needs equal parallelism" in message
        assert "src has 1" in message and "mapper has 2" in message
        assert unequal_error.value.code == "bad_co_location"
        # Nothing was deployed (the node's slots are all free), nor recorded.
        await all_free(address, {"node-1": 4})
        async with open_client(address) as client:
            assert await client.list_jobs() == []

    anyio.run(scenario)


# Needs 4 slots, checkpoints often, runs until cancelled.
STEADY_JOB = """
from mesh import Job, RestartStrategy, sinks, sources

job = Job(
    "{name}",
    parallelism=4,
    checkpoint_interval="100ms",
    restart=RestartStrategy.fixed_delay(attempts=3, delay="200ms"),
)
nums = job.source(sources.Generator(lambda i: i, rate=400)).uid("gen")
nums.key_by(lambda x: x % 8).count().uid("count").filter(lambda r: False).sink(sinks.Collect())
"""


@pytest.mark.slow
def test_a_failing_over_job_keeps_its_slots_and_a_waiting_job_starts_when_it_ends(
    local_cluster, tmp_path: Path
) -> None:
    """A (4 slots) runs on 3 nodes x 2 slots and B (4 slots) waits. node-3, which runs
    part of A, stops with SIGTERM: A fails over onto the 4 slots left — B, newer, does
    not take them — and when A is cancelled B starts there."""
    cluster = local_cluster(nodes=3, slots=2)
    first = write_job(tmp_path, STEADY_JOB.format(name="first"), "first.py")
    second = write_job(tmp_path, STEADY_JOB.format(name="second"), "second.py")
    address = cluster.address

    async def scenario() -> dict[str, Any]:
        async with open_client(address) as client:
            a = await client.submit(prepare_submission(first, base_dir=tmp_path))
            running = await cli_wait_running(address, a)
            assert "node-3" in {node for node, _ in slots_of(running)}
            b = await client.submit_job(prepare_submission(second, base_dir=tmp_path))
            assert b.waiting is not None and "the cluster has 2 free" in b.waiting
            await poll_until(  # a checkpoint to restart from
                lambda: client.status(a),
                until=lambda status: (status["checkpoints"] or {}).get("completed"),
                timeout_s=30,
                what=f"a completed checkpoint of job {a}",
                show=status_summary,
            )
            node3 = next(n for n in cluster.nodes if n.name == "node-3")
            cluster.kill(node3, signal.SIGTERM)
            assert await anyio.to_thread.run_sync(node3.process.wait, 30) == 0
            restarted = await cli_wait_running(address, a)
            waiting = await cli_status(address, b.job_id)
            await client.cancel(a)
            started = await cli_wait_running(address, b.job_id)
            nodes = await cli_nodes(address)
            await client.cancel(b.job_id)
            return {"restarted": restarted, "waiting": waiting, "started": started, "nodes": nodes}

    seen = anyio.run(scenario)
    restarted = seen["restarted"]
    assert restarted["attempt"] == 1 and restarted["restarts"] == 1
    assert "node node-3" in restarted["failures"][-1]["error"]
    assert "left the cluster: stopped (SIGTERM)" in restarted["failures"][-1]["error"]
    assert "chk-" in restarted["restored_from"]
    assert sorted(slots_of(restarted)) == [
        ("node-1", 0),
        ("node-1", 1),
        ("node-2", 0),
        ("node-2", 1),
    ]
    check_placement(restarted)
    # B waited the whole time, oldest job first, and says what it needs and has.
    assert seen["waiting"]["state"] == "SCHEDULING"
    assert "needs 4 slot(s)" in seen["waiting"]["slots"]["waiting"]
    assert "node-3" not in seen["waiting"]["slots"]["waiting"]  # it left
    assert sorted(slots_of(seen["started"])) == sorted(slots_of(restarted))
    assert set(seen["nodes"]) == {"node-1", "node-2"}
