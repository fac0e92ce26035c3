"""The slot scheduler and the node registry (mesh/coordinator/scheduler.py, registry.py)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh
from mesh import sinks, sources
from mesh.coordinator.registry import NodeInfo, NodeRegistry
from mesh.coordinator.scheduler import natural_key, schedule, slots_needed
from mesh.errors import SchedulingError
from mesh.graph.execution import ExecutionGraph, build_execution_graph
from mesh.protocol.messages import PeerAddress, SlotInUse, TaskAssignment


def _inc(x: Any) -> Any:
    return x + 1


def _eg(job: mesh.Job) -> ExecutionGraph:
    return build_execution_graph(job.build().graph)


def _single_task(parallelism: int) -> ExecutionGraph:
    job = mesh.Job("one", parallelism=parallelism)
    job.source(sources.Collection([1])).map(_inc).sink(sinks.Collect())
    eg = _eg(job)
    assert len(eg.job.tasks) == 1
    return eg


def _two_groups() -> ExecutionGraph:
    """default group: tasks of parallelism 2 and 3; group "g": two tasks of parallelism 4."""
    job = mesh.Job("groups", parallelism=2)
    src = job.source(sources.Collection([1])).uid("src")
    wide = src.map(_inc).uid("wide").set_parallelism(3)
    heavy = wide.map(_inc).uid("heavy").set_parallelism(4).slot_sharing_group("g")
    heavy.sink(sinks.Collect()).uid("out").set_parallelism(4).disable_chaining()
    eg = _eg(job)
    assert [(t.slot_sharing_group, t.parallelism) for t in eg.job.tasks] == [
        ("default", 2),
        ("default", 3),
        ("g", 4),
        ("g", 4),
    ]
    return eg


def _placement(assignments: list[TaskAssignment]) -> dict[str, tuple[str, int]]:
    return {a.subtask: (a.node_id, a.slot) for a in assignments}


# -- placement --------------------------------------------------------------------------------


def test_spread_alternates_between_nodes() -> None:
    eg = _single_task(4)
    free = {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3]}
    placed = _placement(schedule(eg, free, {"a": 4, "b": 4}, placement="spread"))
    assert placed == {"0.0": ("a", 0), "0.1": ("b", 0), "0.2": ("a", 1), "0.3": ("b", 1)}


def test_spread_prefers_the_node_with_most_free_slots() -> None:
    eg = _single_task(3)
    free = {"a": [5], "b": [1, 2, 3]}
    placed = _placement(schedule(eg, free, {"a": 6, "b": 4}))  # spread is the default
    # b has 3 free against a's 1: b; then b again (2 vs 1); then a tie, broken by id: a.
    assert placed == {"0.0": ("b", 1), "0.1": ("b", 2), "0.2": ("a", 5)}


def test_pack_fills_the_first_node_first() -> None:
    eg = _single_task(4)
    free = {"b": [0, 1, 2], "a": [3, 4]}
    placed = _placement(schedule(eg, free, {"a": 5, "b": 3}, placement="pack"))
    assert placed == {"0.0": ("a", 3), "0.1": ("a", 4), "0.2": ("b", 0), "0.3": ("b", 1)}


def test_natural_key_only_counts_ascii_digits_and_breaks_ties_by_id() -> None:
    ids = ["node-10", "node-2", "node-02", "node-1²", "node-1", "n"]
    assert sorted(ids, key=natural_key) == [
        "n",
        "node-1",
        "node-1²",
        "node-02",
        "node-2",
        "node-10",
    ]


def test_node_ids_compare_in_natural_order() -> None:
    eg = _single_task(2)
    free = {"node-10": [0, 1], "node-2": [0, 1], "node-9": [0]}
    totals = {"node-10": 2, "node-2": 2, "node-9": 1}
    assert _placement(schedule(eg, free, totals, placement="pack")) == {
        "0.0": ("node-2", 0),
        "0.1": ("node-2", 1),
    }
    spread = _placement(schedule(eg, free, totals))  # a tie of 2 free: node-2, then node-10
    assert spread == {"0.0": ("node-2", 0), "0.1": ("node-10", 0)}
    with pytest.raises(SchedulingError, match="node-2 offers 2 free of 2; node-9 offers 1"):
        schedule(_single_task(9), free, totals)


def test_unknown_placement_is_refused() -> None:
    with pytest.raises(ValueError, match="placement must be one of spread, pack, got 'random'"):
        schedule(_single_task(1), {"a": [0]}, {"a": 1}, placement="random")


def test_slots_needed_is_the_largest_parallelism_per_group() -> None:
    eg = _two_groups()
    assert slots_needed(eg) == {"default": 3, "g": 4}
    assert sum(slots_needed(eg).values()) == 7
    assert slots_needed(_single_task(5)) == {"default": 5}


def test_subtask_i_of_every_task_in_a_group_shares_slot_i() -> None:
    eg = _two_groups()
    free = {"a": list(range(4)), "b": list(range(4))}
    placed = _placement(schedule(eg, free, {"a": 4, "b": 4}))
    assert len(placed) == 2 + 3 + 4 + 4
    for i in range(2):
        assert placed[f"0.{i}"] == placed[f"1.{i}"]
    for i in range(4):
        assert placed[f"2.{i}"] == placed[f"3.{i}"]
    default_slots = {placed[f"1.{i}"] for i in range(3)}
    g_slots = {placed[f"2.{i}"] for i in range(4)}
    assert len(default_slots) == 3 and len(g_slots) == 4
    assert not default_slots & g_slots
    assert len(set(placed.values())) == 7


def test_too_few_slots_says_what_is_needed_and_what_each_node_offers() -> None:
    eg = _two_groups()
    with pytest.raises(SchedulingError) as info:
        schedule(eg, {"n1": [1], "n2": [0, 1]}, {"n1": 2, "n2": 2, "n3": 4})
    message = str(info.value)
    assert "job needs 7 slot(s) (default: 3, g: 4)" in message
    assert "the cluster has 3 free" in message
    assert "n1 offers 1 free of 2" in message
    assert "n2 offers 2 free of 2" in message
    assert "n3 offers 0 free of 4" in message
    assert "\n" not in message


def test_no_nodes_registered() -> None:
    with pytest.raises(SchedulingError) as info:
        schedule(_single_task(2), {}, {})
    assert "needs 2 slot(s)" in str(info.value)
    assert "no nodes are registered" in str(info.value)


def test_exactly_enough_slots_fit() -> None:
    eg = _two_groups()
    placed = _placement(schedule(eg, {"a": [0, 1, 2], "b": [7, 8, 9, 10]}, {"a": 3, "b": 11}))
    assert sorted(set(placed.values())) == [("a", 0), ("a", 1), ("a", 2)] + [
        ("b", s) for s in (7, 8, 9, 10)
    ]


def _co_located(group_of_second: str | None, second_parallelism: int) -> ExecutionGraph:
    job = mesh.Job("co", parallelism=2)
    src = job.source(sources.Collection([1])).uid("src").co_location_group("c")
    second = src.rebalance().map(_inc).uid("second").co_location_group("c")
    second.set_parallelism(second_parallelism)
    if group_of_second is not None:
        second.slot_sharing_group(group_of_second)
    second.sink(sinks.Collect()).uid("out").set_parallelism(second_parallelism)
    return _eg(job)


def test_co_location_across_sharing_groups_is_refused() -> None:
    with pytest.raises(SchedulingError) as info:
        schedule(_co_located("other", 2), {"a": list(range(8))}, {"a": 8})
    message = str(info.value)
    assert "co-location group 'c' spans slot-sharing groups" in message
    assert "src in 'default'" in message and "second in 'other'" in message


def test_co_location_needs_equal_parallelism() -> None:
    with pytest.raises(SchedulingError, match=r"'c' needs equal parallelism \(src has 2, second"):
        schedule(_co_located(None, 3), {"a": list(range(8))}, {"a": 8})


def test_co_located_subtasks_share_a_slot() -> None:
    eg = _co_located(None, 2)
    assert len(eg.job.tasks) == 2
    placed = _placement(schedule(eg, {"a": [0, 1], "b": [0, 1]}, {"a": 2, "b": 2}))
    assert placed["0.0"] == placed["1.0"]
    assert placed["0.1"] == placed["1.1"]
    assert placed["0.0"] != placed["0.1"]


# -- property: random graphs and free-slot maps ---------------------------------------------


@st.composite
def _jobs(draw: st.DrawFn) -> ExecutionGraph:
    job = mesh.Job("random", parallelism=1, max_parallelism=16)
    pipelines = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["default", "g1", "g2"]),
                st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3),
            ),
            min_size=1,
            max_size=3,
        )
    )
    for group, parallelisms in pipelines:
        stream = job.source(sources.Collection([1])).slot_sharing_group(group)
        stream.set_parallelism(parallelisms[0])
        for p in parallelisms[1:]:
            stream = stream.map(_inc).set_parallelism(p).disable_chaining()
        stream.sink(sinks.Collect()).set_parallelism(draw(st.integers(1, 4)))
    if draw(st.booleans()):
        # A co-located pair of unchained tasks in one group, equal parallelism.
        group = draw(st.sampled_from(["default", "g1", "g2"]))
        p = draw(st.integers(1, 4))
        head = job.source(sources.Collection([1])).slot_sharing_group(group).set_parallelism(p)
        head.co_location_group("c")
        tail = head.rebalance().map(_inc).set_parallelism(p).co_location_group("c")
        tail.sink(sinks.Collect()).set_parallelism(p)
    return _eg(job)


def _co_located_tasks(eg: ExecutionGraph) -> list[int]:
    return [
        t.id
        for t in eg.job.tasks
        if any(eg.logical.operator(o).co_location_group == "c" for o in t.operators)
    ]


free_maps = st.dictionaries(
    st.sampled_from(["n0", "n1", "n2", "n3"]),
    st.lists(st.integers(min_value=0, max_value=7), unique=True, max_size=6).map(sorted),
    max_size=4,
)


@given(_jobs(), free_maps, st.sampled_from(["spread", "pack"]))
def test_every_subtask_is_placed_once_in_a_free_slot(
    eg: ExecutionGraph, free: dict[str, list[int]], placement: str
) -> None:
    totals = {node: 8 for node in free}
    needed = sum(slots_needed(eg).values())
    available = sum(len(s) for s in free.values())
    if needed > available:
        with pytest.raises(SchedulingError, match=f"needs {needed} slot"):
            schedule(eg, free, totals, placement=placement)
        return
    assignments = schedule(eg, free, totals, placement=placement)
    subtasks = [a.subtask for a in assignments]
    assert sorted(subtasks) == sorted(str(s) for s in eg.subtasks())
    group_of_task = {t.id: t.slot_sharing_group for t in eg.job.tasks}
    tasks_in_slot: dict[tuple[str, int], list[int]] = defaultdict(list)
    groups_in_slot: dict[tuple[str, int], set[str]] = defaultdict(set)
    for a in assignments:
        assert a.slot in free[a.node_id]
        task = int(a.subtask.split(".")[0])
        tasks_in_slot[(a.node_id, a.slot)].append(task)
        groups_in_slot[(a.node_id, a.slot)].add(group_of_task[task])
    for tasks in tasks_in_slot.values():
        assert len(tasks) == len(set(tasks)), "a slot holds two subtasks of one task"
    for groups in groups_in_slot.values():
        assert len(groups) == 1, "two sharing groups in one slot"
    # Slots used: the largest parallelism per group, summed (computed here independently).
    largest: dict[str, int] = {}
    for t in eg.job.tasks:
        largest[t.slot_sharing_group] = max(largest.get(t.slot_sharing_group, 0), t.parallelism)
    assert len(tasks_in_slot) == needed == sum(largest.values())
    # Subtask i of every co-located task shares one slot.
    where = {a.subtask: (a.node_id, a.slot) for a in assignments}
    co_located = _co_located_tasks(eg)
    if co_located:
        parallelism = eg.job.tasks[co_located[0]].parallelism
        for i in range(parallelism):
            assert len({where[f"{t}.{i}"] for t in co_located}) == 1


# -- the node registry ------------------------------------------------------------------------


def _node(node_id: str, slots: int, heartbeat_ms: float = 0.0) -> NodeInfo:
    return NodeInfo(
        node_id=node_id,
        identity=node_id.encode(),
        slots=slots,
        address=PeerAddress(node_id, "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"),
        host="localhost",
        pid=1234,
        registered_ms=0.0,
        last_heartbeat_ms=heartbeat_ms,
    )


def test_registry_allocate_and_release() -> None:
    registry = NodeRegistry()
    registry.register(_node("a", 3))
    registry.register(_node("b", 2))
    assert registry.free_slots() == {"a": [0, 1, 2], "b": [0, 1]}
    registry.allocate("job-1", 0, [TaskAssignment("0.0", "a", 1), TaskAssignment("0.1", "b", 0)])
    registry.allocate("job-2", 3, [TaskAssignment("0.0", "a", 0)])
    assert registry.free_slots() == {"a": [2], "b": [1]}
    assert registry.get("a") is not None
    assert registry.get("a").summary(0)["jobs"] == ["job-1", "job-2"]  # type: ignore[union-attr]
    registry.release("job-1")
    assert registry.free_slots() == {"a": [1, 2], "b": [0, 1]}
    registry.release("job-1")  # releasing twice is harmless
    registry.release("job-2")
    assert registry.free_slots() == {"a": [0, 1, 2], "b": [0, 1]}


def test_registry_schedule_allocate_round_trip() -> None:
    registry = NodeRegistry()
    for node_id in ("a", "b"):
        registry.register(_node(node_id, 2))
    totals = {n.node_id: n.slots for n in registry.nodes.values()}
    first = schedule(_single_task(3), registry.free_slots(), totals)
    registry.allocate("j1", 0, first)
    assert sum(len(s) for s in registry.free_slots().values()) == 1
    with pytest.raises(SchedulingError, match="a offers 0 free of 2; b offers 1 free of 2"):
        schedule(_single_task(2), registry.free_slots(), totals)
    registry.release("j1")
    assert registry.free_slots() == {"a": [0, 1], "b": [0, 1]}


def test_slots_a_node_reports_busy_are_not_free_until_it_reports_them_free() -> None:
    registry = NodeRegistry()
    registry.register(_node("a", 4))
    registry.allocate("mine", 0, [TaskAssignment("0.0", "a", 1)])
    node = registry.get("a")
    assert node is not None
    # After a coordinator restart the node says slots 0 and 3 are busy with a job the
    # coordinator did not give them to; slot 1 holds what the coordinator gave it.
    busy = [SlotInUse(0, "old", 2), SlotInUse(1, "mine", 0), SlotInUse(3, "old", 2)]
    node.report([*busy, SlotInUse(9, "old", 2)])  # a slot it does not have is ignored
    assert node.held == {0: "old", 3: "old"}
    assert registry.free_slots() == {"a": [2]}
    summary = node.summary(0)
    assert (summary["used"], summary["free"], summary["jobs"]) == (3, 1, ["mine", "old"])
    # The job ends, but the node's last report still has its subtasks in slot 1.
    registry.release("mine")
    assert registry.free_slots() == {"a": [2]}
    assert registry.heartbeat("a", 5, rss_bytes=0, wire_errors=0, occupied=[])
    assert registry.free_slots() == {"a": [0, 1, 2, 3]}
    # A heartbeat without occupancy (None) changes nothing.
    node.report([SlotInUse(2, "old", 2)])
    assert registry.heartbeat("a", 6, rss_bytes=0, wire_errors=0)
    assert registry.free_slots() == {"a": [0, 1, 3]}


def test_a_slot_is_never_double_booked_while_an_old_attempt_still_runs_in_it() -> None:
    registry = NodeRegistry()
    registry.register(_node("a", 2))
    registry.allocate("j", 0, [TaskAssignment("0.0", "a", 0)])
    node = registry.get("a")
    assert node is not None
    node.report([SlotInUse(0, "j", 0)])
    assert registry.free_slots() == {"a": [1]}
    # Attempt 0 is cancelled but its cancel times out: the coordinator lets go of it.
    registry.release("j")
    assert registry.free_slots() == {"a": [1]}  # the node still reports it
    registry.allocate("j", 1, [TaskAssignment("0.0", "a", 1)])
    node.report([SlotInUse(0, "j", 0), SlotInUse(1, "j", 1)])
    assert registry.free_slots() == {"a": []}
    assert node.held == {0: "j"}
    node.report([SlotInUse(1, "j", 1)])  # attempt 0 ended at last
    assert registry.free_slots() == {"a": [0]}


def test_a_leaving_node_offers_no_slots() -> None:
    registry = NodeRegistry()
    registry.register(_node("a", 2))
    registry.register(_node("b", 2))
    node = registry.get("b")
    assert node is not None
    node.leaving = True
    assert registry.free_slots() == {"a": [0, 1]}
    assert registry.totals() == {"a": 2}
    assert node.summary(0)["leaving"] is True


def test_registry_replacing_a_node_returns_the_old_registration() -> None:
    registry = NodeRegistry()
    old = _node("a", 2)
    assert registry.register(old) is None
    new = _node("a", 4)
    assert registry.register(new) is old
    assert registry.get("a") is new
    assert registry.free_slots() == {"a": [0, 1, 2, 3]}
    assert registry.remove("a") is new
    assert registry.remove("a") is None
    assert registry.free_slots() == {}


def test_registry_heartbeats_and_expiry() -> None:
    registry = NodeRegistry()
    registry.register(_node("a", 1, heartbeat_ms=1000))
    registry.register(_node("b", 1, heartbeat_ms=1000))
    assert registry.heartbeat("a", 4000, rss_bytes=10, wire_errors=2)
    assert not registry.heartbeat("ghost", 4000, rss_bytes=0, wire_errors=0)
    node = registry.get("a")
    assert node is not None
    assert (node.last_heartbeat_ms, node.rss_bytes, node.wire_errors) == (4000, 10, 2)
    # Silent for exactly the timeout is not yet expired; longer is.
    assert registry.expired(now_ms=6000, timeout_ms=5000) == []
    assert registry.expired(now_ms=6001, timeout_ms=5000) == ["b"]
    assert sorted(registry.expired(now_ms=9001, timeout_ms=5000)) == ["a", "b"]
