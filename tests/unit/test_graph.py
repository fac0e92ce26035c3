"""Logical graph, chaining and execution graph, built through the public API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh
from mesh import GraphError, sinks, sources
from mesh.graph.chaining import JobGraph, build_job_graph, is_chainable
from mesh.graph.execution import ExecutionGraph, SubtaskRef, build_execution_graph
from mesh.graph.logical import Chaining, LogicalGraph, Partitioning


def _inc(x: Any) -> Any:
    return x + 1


def _keep(x: Any) -> bool:
    return True


def _items() -> sources.Collection:
    return sources.Collection([1, 2, 3])


def _graph(job: mesh.Job) -> LogicalGraph:
    return job.build().graph


def _chains(graph: LogicalGraph | JobGraph) -> list[list[str]]:
    """Tasks as lists of operator uids, head first."""
    jg = graph if isinstance(graph, JobGraph) else build_job_graph(graph)
    return [[jg.logical.operator(o).uid for o in task.operators] for task in jg.tasks]


def _edge(graph: LogicalGraph, source_uid: str, target_uid: str) -> Partitioning:
    ids = {op.uid: op.id for op in graph.operators}
    (edge,) = [e for e in graph.edges if (e.source, e.target) == (ids[source_uid], ids[target_uid])]
    return edge.partitioning


def _pipeline(
    job: mesh.Job,
    *,
    on_src: Callable[[Any], Any] = lambda s: s,
    on_map: Callable[[Any], Any] = lambda s: s,
) -> None:
    """src -> m -> f -> out, with a hook to configure src and m."""
    src = on_src(job.source(_items()).uid("src"))
    m = on_map(src.map(_inc).uid("m"))
    m.filter(_keep).uid("f").sink(sinks.Collect()).uid("out")


# -- chaining rules ---------------------------------------------------------------------------


def test_forward_edges_of_equal_parallelism_chain_into_one_task() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job)
    graph = _graph(job)
    assert _chains(graph) == [["src", "m", "f", "out"]]
    assert all(e.partitioning is Partitioning.FORWARD for e in graph.edges)
    jg = build_job_graph(graph)
    assert jg.edges == ()
    assert jg.tasks[0].parallelism == 2
    assert jg.tasks[0].name == "Source: Collection -> Map -> Filter -> Sink: Collect"
    assert jg.task_of_operator == (0, 0, 0, 0)


def test_different_parallelism_gives_a_rebalance_edge_between_tasks() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_map=lambda s: s.set_parallelism(3))
    graph = _graph(job)
    assert _edge(graph, "src", "m") is Partitioning.REBALANCE
    # f and out keep the job's parallelism 2, so m -> f is a rebalance edge as well.
    assert _edge(graph, "m", "f") is Partitioning.REBALANCE
    assert _chains(graph) == [["src"], ["m"], ["f", "out"]]
    jg = build_job_graph(graph)
    assert [(e.source_task, e.target_task, e.partitioning) for e in jg.edges] == [
        (0, 1, Partitioning.REBALANCE),
        (1, 2, Partitioning.REBALANCE),
    ]
    assert [t.parallelism for t in jg.tasks] == [2, 3, 2]


def test_explicit_non_forward_partitioning_is_not_chained_even_at_equal_parallelism() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_src=lambda s: s.rebalance())
    graph = _graph(job)
    assert _edge(graph, "src", "m") is Partitioning.REBALANCE
    assert _chains(graph) == [["src"], ["m", "f", "out"]]


def test_explicit_forward_at_equal_parallelism_chains() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_src=lambda s: s.forward())
    assert _chains(_graph(job)) == [["src", "m", "f", "out"]]


def test_key_by_gives_a_hash_edge_that_is_not_chained() -> None:
    job = mesh.Job("j", parallelism=2)
    src = job.source(_items()).uid("src")
    src.key_by(lambda x: x).count().uid("count").sink(sinks.Collect()).uid("out")
    graph = _graph(job)
    assert _edge(graph, "src", "count") is Partitioning.HASH
    assert _chains(graph) == [["src"], ["count", "out"]]


def test_fan_out_to_two_consumers_is_not_chained() -> None:
    job = mesh.Job("j", parallelism=2)
    src = job.source(_items()).uid("src")
    src.map(_inc).uid("a").sink(sinks.Collect()).uid("out-a")
    src.map(_inc).uid("b").sink(sinks.Collect()).uid("out-b")
    graph = _graph(job)
    assert _edge(graph, "src", "a") is Partitioning.FORWARD
    assert _edge(graph, "src", "b") is Partitioning.FORWARD
    assert _chains(graph) == [["src"], ["a", "out-a"], ["b", "out-b"]]
    edge = graph.outputs_of(0)[0]
    assert not is_chainable(graph, edge)


def test_union_two_inputs_is_not_chained() -> None:
    job = mesh.Job("j", parallelism=2)
    left = job.source(_items()).uid("src-l").map(_inc).uid("l")
    right = job.source(_items()).uid("src-r").map(_inc).uid("r")
    left.union(right).map(_inc).uid("both").sink(sinks.Collect()).uid("out")
    graph = _graph(job)
    assert _edge(graph, "l", "both") is Partitioning.FORWARD
    assert _edge(graph, "r", "both") is Partitioning.FORWARD
    assert _chains(graph) == [["src-l", "l"], ["src-r", "r"], ["both", "out"]]
    jg = build_job_graph(graph)
    both_task = jg.task_of_operator[4]
    assert len(jg.inputs_of(both_task)) == 2


def test_different_slot_sharing_group_is_not_chained_and_is_inherited() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_map=lambda s: s.slot_sharing_group("heavy"))
    graph = _graph(job)
    assert _chains(graph) == [["src"], ["m", "f", "out"]]
    groups = {op.uid: op.slot_sharing_group for op in graph.operators}
    assert groups == {"src": "default", "m": "heavy", "f": "heavy", "out": "heavy"}
    jg = build_job_graph(graph)
    assert [t.slot_sharing_group for t in jg.tasks] == ["default", "heavy"]


def test_operator_with_inputs_from_two_groups_falls_back_to_default_group() -> None:
    job = mesh.Job("j")
    left = job.source(_items()).slot_sharing_group("a")
    right = job.source(_items()).slot_sharing_group("b")
    left.union(right).map(_inc).uid("m").sink(sinks.Collect())
    groups = {op.uid: op.slot_sharing_group for op in _graph(job).operators}
    assert groups["m"] == "default"


def test_disable_chaining_isolates_the_operator_on_both_sides() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_map=lambda s: s.disable_chaining())
    graph = _graph(job)
    assert graph.operator(1).chaining is Chaining.NEVER
    assert _chains(graph) == [["src"], ["m"], ["f", "out"]]
    # The edges stay forward edges: only chaining is off.
    assert [e.partitioning for e in build_job_graph(graph).edges] == [Partitioning.FORWARD] * 2


def test_disable_chaining_on_a_source_stops_its_output_chain() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_src=lambda s: s.disable_chaining())
    assert _chains(_graph(job)) == [["src"], ["m", "f", "out"]]


def test_start_new_chain_breaks_before_but_chains_after() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_map=lambda s: s.start_new_chain())
    graph = _graph(job)
    assert graph.operator(1).chaining is Chaining.HEAD
    assert _chains(graph) == [["src"], ["m", "f", "out"]]


def test_start_new_chain_on_a_head_changes_nothing() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_src=lambda s: s.start_new_chain())
    assert _chains(_graph(job)) == [["src", "m", "f", "out"]]


def test_start_new_chain_does_not_undo_disable_chaining() -> None:
    job = mesh.Job("j", parallelism=2)
    _pipeline(job, on_map=lambda s: s.disable_chaining().start_new_chain())
    graph = _graph(job)
    assert graph.operator(1).chaining is Chaining.NEVER
    assert _chains(graph) == [["src"], ["m"], ["f", "out"]]


# -- execution graph --------------------------------------------------------------------------


def _two_task_job(p_up: int, p_down: int, partition: Callable[[Any], Any]) -> ExecutionGraph:
    job = mesh.Job("j", parallelism=1, max_parallelism=64)
    src = job.source(_items()).set_parallelism(p_up).disable_chaining()
    partition(src).map(_inc).set_parallelism(p_down).sink(sinks.Collect()).set_parallelism(p_down)
    return build_execution_graph(job.build().graph)


def _pairs(eg: ExecutionGraph) -> list[tuple[int, int]]:
    return [(c.producer.index, c.consumer.index) for c in eg.channels]


def test_forward_channels_pair_subtask_i_with_i() -> None:
    eg = _two_task_job(3, 3, lambda s: s)
    assert eg.job.edges[0].partitioning is Partitioning.FORWARD
    assert _pairs(eg) == [(0, 0), (1, 1), (2, 2)]
    assert [c.id for c in eg.channels] == [0, 1, 2]
    assert all(c.producer.task == 0 and c.consumer.task == 1 for c in eg.channels)


@pytest.mark.parametrize(
    ("p_up", "p_down", "pairs"),
    [
        (2, 4, [(0, 0), (0, 1), (1, 2), (1, 3)]),
        (2, 3, [(0, 0), (1, 1), (1, 2)]),
        (4, 2, [(0, 0), (1, 0), (2, 1), (3, 1)]),
        (3, 2, [(0, 0), (1, 0), (2, 1)]),
        (2, 2, [(0, 0), (1, 1)]),
    ],
)
def test_rescale_channels_are_pointwise(
    p_up: int, p_down: int, pairs: list[tuple[int, int]]
) -> None:
    eg = _two_task_job(p_up, p_down, lambda s: s.rescale())
    assert eg.job.edges[0].partitioning is Partitioning.RESCALE
    assert _pairs(eg) == pairs
    assert [c.id for c in eg.channels] == list(range(len(pairs)))


@given(st.integers(min_value=1, max_value=9), st.integers(min_value=1, max_value=9))
def test_rescale_connects_everyone_to_a_contiguous_local_subset(p_up: int, p_down: int) -> None:
    eg = _two_task_job(p_up, p_down, lambda s: s.rescale())
    pairs = _pairs(eg)
    assert len(set(pairs)) == len(pairs)
    consumers_of = {p: [c for q, c in pairs if q == p] for p in range(p_up)}
    producers_of = {c: [p for p, d in pairs if d == c] for c in range(p_down)}
    assert all(consumers_of[p] for p in range(p_up)), "a producer with no consumer"
    assert all(producers_of[c] for c in range(p_down)), "a consumer with no producer"
    for targets in consumers_of.values():
        assert targets == list(range(targets[0], targets[-1] + 1))
    if p_up <= p_down:
        assert all(len(ps) == 1 for ps in producers_of.values())
    if p_up >= p_down:
        assert all(len(cs) == 1 for cs in consumers_of.values())
    assert len(pairs) == max(p_up, p_down)


@pytest.mark.parametrize(
    ("partition", "expected"),
    [
        (lambda s: s.key_by(lambda x: x), Partitioning.HASH),
        (lambda s: s.rebalance(), Partitioning.REBALANCE),
        (lambda s: s.broadcast(), Partitioning.BROADCAST),
        (lambda s: s.shuffle(), Partitioning.SHUFFLE),
    ],
)
def test_all_to_all_partitionings(partition: Callable[[Any], Any], expected: Partitioning) -> None:
    eg = _two_task_job(2, 3, partition)
    assert eg.job.edges[0].partitioning is expected
    assert _pairs(eg) == [(p, c) for p in range(2) for c in range(3)]
    assert [c.id for c in eg.channels] == list(range(6))
    assert [c.id for c in eg.output_channels(0, 1)] == [3, 4, 5]
    assert [c.id for c in eg.input_channels(SubtaskRef(1, 2))] == [2, 5]


def _multi_edge_job() -> mesh.Job:
    job = mesh.Job("multi", parallelism=2)
    src = job.source(_items()).uid("src")
    counted = src.key_by(lambda x: x % 2).count().uid("count")
    wide = counted.broadcast().map(_inc).set_parallelism(3).uid("m")
    wide.sink(sinks.Collect()).uid("out").set_parallelism(3)
    side = src.rescale().map(_inc).uid("side").set_parallelism(4)
    side.sink(sinks.Print()).uid("print").set_parallelism(4)
    return job


def test_channel_ids_run_over_edges_then_producers_then_consumers() -> None:
    eg = build_execution_graph(_multi_edge_job().build().graph)
    keys = [(c.edge, c.producer.index, c.consumer.index) for c in eg.channels]
    assert keys == sorted(keys)
    assert [c.id for c in eg.channels] == list(range(len(eg.channels)))
    edges = [(e.id, e.partitioning) for e in eg.job.edges]
    assert edges == [
        (0, Partitioning.HASH),
        (1, Partitioning.BROADCAST),
        (2, Partitioning.RESCALE),
    ]
    assert _chains(eg.job) == [["src"], ["count"], ["m", "out"], ["side", "print"]]
    # hash 2x2, then broadcast 2x3, then rescale 2->4
    per_edge = [sum(1 for c in eg.channels if c.edge == e) for e in range(3)]
    assert per_edge == [4, 6, 4]
    assert [str(s) for s in eg.subtasks()] == [
        "0.0",
        "0.1",
        "1.0",
        "1.1",
        "2.0",
        "2.1",
        "2.2",
        "3.0",
        "3.1",
        "3.2",
        "3.3",
    ]


def test_channel_numbering_is_deterministic_across_builds_and_serialisation() -> None:
    first = build_execution_graph(_multi_edge_job().build().graph)
    second = build_execution_graph(_multi_edge_job().build().graph)
    wire = orjson.loads(orjson.dumps(first.logical.to_dict()))
    third = build_execution_graph(LogicalGraph.from_dict(wire))
    assert first.channels == second.channels == third.channels
    assert first.job.tasks == second.job.tasks == third.job.tasks


def test_execution_graph_accepts_a_job_graph() -> None:
    graph = _multi_edge_job().build().graph
    jg = build_job_graph(graph)
    assert build_execution_graph(jg).channels == build_execution_graph(graph).channels
    assert build_execution_graph(jg).logical is graph


# -- serialisation and fingerprint ------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json() -> None:
    job = mesh.Job("round", parallelism=2, max_parallelism=32, checkpoint_mode="at_least_once")
    src = job.source(sources.JsonLines("in/*.jsonl")).name("read").slot_sharing_group("io")
    src.key_by(lambda r: r["k"]).sum("v").co_location_group("c").disable_chaining().sink(
        sinks.JsonLines("out")
    ).uid("sink")
    # Job(checkpoint_interval=...) is refused until checkpoints land; build() can set it.
    graph = job.build(checkpoint_interval_ms=3000).graph
    wire = orjson.loads(orjson.dumps(graph.to_dict()))
    again = LogicalGraph.from_dict(wire)
    assert again == graph
    assert again.fingerprint() == graph.fingerprint()
    assert again.config.checkpoint_interval_ms == 3000
    assert again.config.checkpoint_mode == "at_least_once"
    assert again.operator(1).chaining is Chaining.NEVER
    assert again.operator(0).description == {
        "type": "JsonLines",
        "path": "in/*.jsonl",
        "follow": False,
    }


def _fingerprint(**changes: Any) -> str:
    job = mesh.Job(
        changes.get("name", "fp"),
        parallelism=changes.get("parallelism", 2),
        max_parallelism=changes.get("max_parallelism", 128),
        checkpoint_mode=changes.get("checkpoint_mode", "exactly_once"),
    )
    src = job.source(sources.Collection([1, 2]))
    stream = src.rebalance() if changes.get("rebalance") else src
    m = stream.map(_inc).uid(changes.get("uid", "m"))
    if changes.get("map_parallelism"):
        m.set_parallelism(changes["map_parallelism"])
    m.sink(sinks.Collect())
    return job.build(checkpoint_interval_ms=changes.get("interval")).graph.fingerprint()


def test_fingerprint_is_stable_for_equal_graphs() -> None:
    assert _fingerprint() == _fingerprint()
    assert len(_fingerprint()) == 16
    int(_fingerprint(), 16)
    # Functions are not part of the graph: a different lambda is the same graph.
    a, b = mesh.Job("f"), mesh.Job("f")
    a.source(_items()).map(lambda x: x).sink(sinks.Collect())
    b.source(_items()).map(lambda x: -x).sink(sinks.Collect())
    assert a.build().graph.fingerprint() == b.build().graph.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"name": "other"},
        {"parallelism": 3},
        {"max_parallelism": 64},
        {"interval": 1000},
        {"checkpoint_mode": "at_least_once"},
        {"uid": "renamed"},
        {"rebalance": True},
        {"map_parallelism": 4},
    ],
)
def test_fingerprint_changes_with_the_graph(change: dict[str, Any]) -> None:
    assert _fingerprint(**change) != _fingerprint()


@pytest.mark.parametrize(
    "data",
    [
        None,
        "graph",
        [],
        {},
        {"config": {"name": "x"}, "operators": []},
        {"config": "x", "operators": [], "edges": []},
        {"config": {"name": "x", "bogus": 1}, "operators": [], "edges": []},
    ],
    ids=["none", "str", "list", "empty", "no-edges", "config-str", "config-extra-key"],
)
def test_from_dict_rejects_malformed_input(data: Any) -> None:
    with pytest.raises(GraphError, match="malformed job graph"):
        LogicalGraph.from_dict(data)


def _valid_dict() -> dict[str, Any]:
    job = mesh.Job("valid", parallelism=2)
    job.source(_items()).map(_inc).sink(sinks.Collect())
    wire: dict[str, Any] = orjson.loads(orjson.dumps(job.build().graph.to_dict()))
    return wire


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["edges"][0].update(partitioning="sideways"), "malformed job graph"),
        (lambda d: d["operators"][1].update(chaining="sometimes"), "malformed job graph"),
        (lambda d: d["operators"][1].update(colour="red"), "malformed job graph"),
        (lambda d: d["operators"][1].pop("uid"), "malformed job graph"),
        (lambda d: d["edges"][0].update(source="zero"), "malformed job graph"),
        (lambda d: d["edges"].append(5), "malformed job graph"),
        (lambda d: d["edges"][0].update(target=9), "refers to a missing operator"),
        (lambda d: d["edges"][0].update(source=2, target=1), "goes backwards"),
        (lambda d: d["operators"][1].update(id=7), "ids must be 0..n-1"),
        (lambda d: d["operators"][1].update(uid="source-0"), "repeated: source-0"),
        (lambda d: d["operators"][1].update(parallelism=0), "parallelism 0 must be between"),
        (lambda d: d["operators"][1].update(parallelism=3), "needs equal parallelism"),
        (lambda d: d["operators"][2].update(kind="map"), "has no sink"),
    ],
)
def test_from_dict_rejects_invalid_graphs(mutate: Callable[[Any], Any], message: str) -> None:
    data = _valid_dict()
    mutate(data)
    with pytest.raises(GraphError, match=message):
        LogicalGraph.from_dict(data)


def test_from_dict_rejects_wrongly_typed_parallelism() -> None:
    data = _valid_dict()
    data["operators"][1]["parallelism"] = "2"
    with pytest.raises(GraphError):
        LogicalGraph.from_dict(data)


# -- validation through the API ---------------------------------------------------------------


def test_explicit_forward_between_unequal_parallelism_is_refused() -> None:
    job = mesh.Job("j", parallelism=2)
    src = job.source(_items()).uid("src")
    src.forward().map(_inc).uid("wide").set_parallelism(4).sink(sinks.Collect())
    with pytest.raises(GraphError) as info:
        job.build()
    message = str(info.value)
    assert "forward edge 'src' -> 'wide'" in message
    assert "2 and 4" in message
    assert "rebalance()" in message


def test_a_job_without_a_sink_is_refused() -> None:
    job = mesh.Job("sinkless")
    job.source(_items()).map(_inc)
    with pytest.raises(GraphError, match=r"job 'sinkless' has no sink; add one with \.sink"):
        job.build()


def test_an_empty_job_is_refused() -> None:
    with pytest.raises(GraphError, match="job 'empty' has no source"):
        mesh.Job("empty").build()


def test_duplicate_uids_are_refused() -> None:
    job = mesh.Job("j")
    job.source(_items()).uid("same").map(_inc).uid("same").sink(sinks.Collect())
    with pytest.raises(GraphError, match="uids must be unique; repeated: same"):
        job.build()


def test_default_uid_colliding_with_an_explicit_one_is_refused() -> None:
    job = mesh.Job("j")
    job.source(_items()).map(_inc).uid("source-0").sink(sinks.Collect())
    with pytest.raises(GraphError, match="repeated: source-0"):
        job.build()


def test_operator_parallelism_above_max_parallelism_is_refused() -> None:
    job = mesh.Job("j", max_parallelism=8)
    job.source(_items()).map(_inc).uid("big").set_parallelism(9).sink(sinks.Collect())
    with pytest.raises(GraphError, match="'big': parallelism 9 exceeds max_parallelism 8"):
        job.build()


def test_build_parallelism_override_above_max_parallelism_is_refused() -> None:
    job = mesh.Job("j", max_parallelism=8)
    job.source(_items()).sink(sinks.Collect())
    with pytest.raises(GraphError, match="parallelism 9 exceeds the job's max_parallelism 8"):
        job.build(parallelism=9)


def test_build_parallelism_override_keeps_explicit_parallelism() -> None:
    job = mesh.Job("j", parallelism=2)
    job.source(_items()).uid("src").map(_inc).uid("m").set_parallelism(3).sink(sinks.Collect()).uid(
        "out"
    )
    graph = job.build(parallelism=5, checkpoint_interval_ms=700).graph
    assert {op.uid: op.parallelism for op in graph.operators} == {"src": 5, "m": 3, "out": 5}
    assert graph.config.parallelism == 5
    assert graph.config.checkpoint_interval_ms == 700


def test_taking_the_same_stream_twice_is_refused() -> None:
    job = mesh.Job("j")
    src = job.source(_items())
    src.union(src).sink(sinks.Collect())
    with pytest.raises(GraphError, match="takes the same stream twice"):
        job.build()


def test_logical_graph_queries() -> None:
    job = mesh.Job("j")
    left = job.source(_items())
    right = job.source(_items())
    left.union(right).sink(sinks.Collect())
    graph = _graph(job)
    assert [op.id for op in graph.sources()] == [0, 1]
    assert [(e.source, e.target) for e in graph.inputs_of(2)] == [(0, 2), (1, 2)]
    assert [(e.source, e.target) for e in graph.outputs_of(0)] == [(0, 2)]


def test_dead_letters_get_a_sink_fed_by_every_operator_running_user_code() -> None:
    from mesh.graph.chaining import build_job_graph
    from mesh.graph.logical import DEAD_LETTER

    job = mesh.Job("dl", parallelism=2, on_error="dead_letter")
    (
        job.source(mesh.sources.Collection([1]))
        .map(str)
        .uid("m")
        .key_by(len)
        .count()
        .uid("c")
        .sink(mesh.sinks.Print())
    )
    graph = job.build().graph
    dead = graph.operators[-1]
    assert (dead.uid, dead.kind, dead.parallelism) == ("dead-letters", "sink", 1)
    tagged = [(graph.operator(e.source).uid, e.tag) for e in graph.edges if e.target == dead.id]
    assert tagged == [("m", DEAD_LETTER), ("c", DEAD_LETTER)]
    # The side outputs do not break chains: source -> map still fuse, as without them.
    tasks = build_job_graph(graph).tasks
    assert [[graph.operator(o).uid for o in t.operators] for t in tasks] == [
        ["source-0", "m"],
        ["c", "sink-3"],
        ["dead-letters"],
    ]
    # The same job without dead letters has the same chains and no extra sink.
    job.on_error = "fail"
    assert [op.uid for op in job.build().graph.operators][-1] == "sink-3"


def test_a_partitioned_or_keyed_side_output_still_reads_the_side_output() -> None:
    job = mesh.Job("sides", parallelism=2)
    main = job.source(sources.Collection([1])).process(lambda r, ctx: ctx.output("odd", r)).uid("p")
    main.side_output("odd").broadcast().sink(sinks.Print()).uid("broadcast")
    main.side_output("odd").key_by(lambda r: r).sink(sinks.Print()).uid("keyed")
    graph = job.build().graph
    by_uid = {op.uid: op.id for op in graph.operators}
    edges = {(e.target, e.partitioning, e.tag) for e in graph.edges if e.source == by_uid["p"]}
    assert edges == {
        (by_uid["broadcast"], Partitioning.BROADCAST, "odd"),
        (by_uid["keyed"], Partitioning.HASH, "odd"),
    }
