"""The public API surface: ``import mesh``, Job, streams, sources, sinks, the job loader."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mesh
from mesh import GraphError, JobCodeError, sinks, sources
from mesh.api.loader import find_job, import_job_file, load_job
from mesh.graph.logical import Chaining, Partitioning


def _ident(x: Any) -> Any:
    return x


def _items() -> sources.Collection:
    return sources.Collection([1, 2, 3])


# -- the surface ------------------------------------------------------------------------------


def test_all_is_sorted_and_every_name_exists() -> None:
    assert mesh.__all__ == sorted(mesh.__all__)
    assert len(set(mesh.__all__)) == len(mesh.__all__)
    for name in mesh.__all__:
        assert hasattr(mesh, name), name


def test_error_classes_form_one_tree() -> None:
    for name in ("ConfigError", "GraphError", "JobCodeError", "RecordError", "JobFailed"):
        assert issubclass(getattr(mesh, name), mesh.MeshError)
    assert issubclass(mesh.EncodingError, mesh.RecordError)


def test_version_is_a_string() -> None:
    assert isinstance(mesh.__version__, str) and mesh.__version__


# -- Job arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parallelism": 0}, "Job parallelism must be a positive int, got 0"),
        ({"parallelism": -2}, "Job parallelism must be a positive int"),
        ({"parallelism": 2.0}, "Job parallelism must be a positive int, got 2.0"),
        ({"parallelism": True}, "Job parallelism must be a positive int, got True"),
        ({"parallelism": "4"}, "Job parallelism must be a positive int, got '4'"),
        ({"max_parallelism": 0}, "Job max_parallelism must be a positive int"),
        ({"parallelism": 8, "max_parallelism": 4}, "parallelism 8 exceeds max_parallelism 4"),
        ({"checkpoint_mode": "twice"}, "checkpoint_mode must be one of exactly_once, at_least"),
        ({"state_backend": "rocksdb"}, "state_backend must be one of memory, sqlite"),
        ({"checkpoint_interval": "5 parsecs"}, "checkpoint_interval: expected a duration like"),
        ({"checkpoint_interval": -5}, "checkpoint_interval: must not be negative"),
        ({"buffer_timeout": "5 parsecs"}, "buffer_timeout: expected a duration like"),
        ({"buffer_timeout": "soon"}, "'soon'"),
    ],
)
def test_job_argument_validation_names_the_parameter(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphError) as info:
        mesh.Job("j", **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_job_name_must_be_a_non_empty_string(name: Any) -> None:
    with pytest.raises(GraphError, match="Job name must be a non-empty string"):
        mesh.Job(name)


def test_job_settings_reach_the_graph_config() -> None:
    job = mesh.Job(
        "cfg",
        parallelism=3,
        max_parallelism=16,
        checkpoint_mode="at_least_once",
        state_backend="memory",
        buffer_timeout="25ms",
    )
    job.source(_items()).sink(sinks.Collect())
    config = job.build().graph.config
    assert config.name == "cfg"
    assert config.parallelism == 3
    assert config.max_parallelism == 16
    assert config.checkpoint_mode == "at_least_once"
    assert config.state_backend == "memory"
    assert config.buffer_timeout_ms == 25


def test_restart_strategy_defaults_follow_checkpointing() -> None:
    plain = mesh.Job("j")
    plain.source(_items()).sink(mesh.sinks.Print())
    assert plain.build().graph.config.restart == {"kind": "none"}
    checkpointed = mesh.Job("j", checkpoint_interval="1s")
    checkpointed.source(_items()).sink(mesh.sinks.Print())
    assert checkpointed.build().graph.config.restart == {
        "kind": "exponential",
        "initial_ms": 1000,
        "max_ms": 60_000,
        "multiplier": 2.0,
        "reset_after_ms": 3_600_000,
    }
    chosen = mesh.Job("j", restart=mesh.RestartStrategy.fixed_delay(3, "250ms"))
    chosen.source(_items()).sink(mesh.sinks.Print())
    assert chosen.build().graph.config.restart == {
        "kind": "fixed_delay",
        "attempts": 3,
        "delay_ms": 250,
    }


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: mesh.Job("j", restart="fixed-delay"), "Job restart must be a RestartStrategy"),
        (lambda: mesh.RestartStrategy.fixed_delay(-1), "attempts must be an int >= 0, got -1"),
        (lambda: mesh.RestartStrategy.fixed_delay(2, "soon"), "delay: expected a duration"),
        (
            lambda: mesh.RestartStrategy.exponential(initial="10s", max="1s"),
            "initial '10s' is longer than max '1s'",
        ),
        (lambda: mesh.RestartStrategy.exponential(multiplier=0.5), "between 1 and 100"),
        (lambda: mesh.RestartStrategy.failure_rate(3, interval=0), "interval must be above zero"),
        (lambda: mesh.RestartStrategy("sometimes"), "kind must be one of"),
        (lambda: mesh.Job("j", on_error="ignore"), "on_error must be one of fail, dead_letter"),
        (
            lambda: mesh.Job("j", dead_letter=mesh.sinks.Print()),
            'dead_letter is only used with on_error="dead_letter"',
        ),
    ],
)
def test_bad_failure_settings_are_refused(make: Any, what: str) -> None:
    with pytest.raises(GraphError) as info:
        make()
    assert what in str(info.value)


def test_watermarks_must_be_a_strategy() -> None:
    job = mesh.Job("j")
    with pytest.raises(GraphError, match="watermarks must be a WatermarkStrategy"):
        job.source(_items(), watermarks=object())


def test_job_defaults() -> None:
    job = mesh.Job("d")
    job.source(_items()).sink(sinks.Collect())
    config = job.build().graph.config
    assert (config.parallelism, config.max_parallelism) == (1, 128)
    assert config.checkpoint_interval_ms is None
    assert config.checkpoint_mode == "exactly_once"
    assert config.state_backend == "memory"
    assert config.buffer_timeout_ms == 10


def test_build_parallelism_override_is_validated() -> None:
    job = mesh.Job("j")
    job.source(_items()).sink(sinks.Collect())
    with pytest.raises(GraphError, match="parallelism must be a positive int, got 0"):
        job.build(parallelism=0)


# -- operator options -------------------------------------------------------------------------


def _built_op(job: mesh.Job, uid: str) -> Any:
    graph = job.build().graph
    (op,) = [op for op in graph.operators if op.uid == uid]
    return op


@pytest.mark.parametrize(
    ("option", "check"),
    [
        (lambda s: s.name("parse"), lambda op: op.name == "parse"),
        (lambda s: s.set_parallelism(3), lambda op: op.parallelism == 3),
        (lambda s: s.slot_sharing_group("g"), lambda op: op.slot_sharing_group == "g"),
        (lambda s: s.co_location_group("c"), lambda op: op.co_location_group == "c"),
        (lambda s: s.disable_chaining(), lambda op: op.chaining is Chaining.NEVER),
        (lambda s: s.start_new_chain(), lambda op: op.chaining is Chaining.HEAD),
    ],
)
def test_operator_options_return_the_stream_and_land_on_its_operator(
    option: Callable[[Any], Any], check: Callable[[Any], bool]
) -> None:
    job = mesh.Job("opts", parallelism=2)
    src = job.source(_items()).uid("src")
    mapped = src.map(_ident).uid("m")
    assert option(mapped) is mapped
    mapped.filter(bool).uid("f").sink(sinks.Collect()).uid("out")
    graph = job.build().graph
    by_uid = {op.uid: op for op in graph.operators}
    assert check(by_uid["m"])
    # The upstream neighbour is untouched.
    assert not check(by_uid["src"])


def test_uid_option_lands_on_its_operator() -> None:
    job = mesh.Job("j")
    stream = job.source(_items()).map(_ident)
    assert stream.uid("parse") is stream
    stream.sink(sinks.Collect())
    uids = [op.uid for op in job.build().graph.operators]
    assert uids == ["source-0", "parse", "sink-2"]


def test_options_on_a_sink_handle() -> None:
    job = mesh.Job("j", parallelism=2)
    handle = job.source(_items()).sink(sinks.Print())
    assert handle.name("console").uid("console").set_parallelism(1) is handle
    op = _built_op(job, "console")
    assert (op.kind, op.name, op.parallelism) == ("sink", "console", 1)
    assert repr(handle) == "StreamSink(job='j', operator=1)"


def test_options_after_partitioning_apply_to_the_upstream_operator() -> None:
    job = mesh.Job("j")
    job.source(_items()).uid("src").rebalance().name("reader").map(_ident).sink(sinks.Collect())
    assert _built_op(job, "src").name == "reader"


def test_source_name_argument() -> None:
    job = mesh.Job("j")
    job.source(_items(), name="numbers").sink(sinks.Collect())
    assert _built_op(job, "source-0").name == "numbers"


@pytest.mark.parametrize(
    "option",
    [
        lambda s: s.name("x"),
        lambda s: s.uid("x"),
        lambda s: s.set_parallelism(2),
        lambda s: s.slot_sharing_group("g"),
        lambda s: s.co_location_group("c"),
        lambda s: s.disable_chaining(),
        lambda s: s.start_new_chain(),
    ],
)
def test_options_on_a_union_raise(option: Callable[[Any], Any]) -> None:
    job = mesh.Job("j")
    union = job.source(_items()).union(job.source(_items()))
    with pytest.raises(GraphError, match="union of several"):
        option(union)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (lambda s: s.name(""), "name must be a non-empty string"),
        (lambda s: s.uid("  "), "uid must be a non-empty string"),
        (lambda s: s.uid(7), "uid must be a non-empty string, got 7"),
        (lambda s: s.set_parallelism(0), "set_parallelism() must be a positive int, got 0"),
        (lambda s: s.set_parallelism(True), "set_parallelism() must be a positive int"),
        (lambda s: s.set_parallelism(1.5), "got 1.5"),
        (lambda s: s.slot_sharing_group(""), "group must be a non-empty string"),
    ],
)
def test_bad_option_values_raise(option: Callable[[Any], Any], message: str) -> None:
    job = mesh.Job("j")
    stream = job.source(_items())
    with pytest.raises(GraphError) as info:
        option(stream)
    assert message in str(info.value)


@pytest.mark.parametrize("method", ["map", "filter", "flat_map", "key_by"])
def test_transformations_need_a_callable(method: str) -> None:
    job = mesh.Job("j")
    stream = job.source(_items())
    with pytest.raises(GraphError, match=rf"{method}\(\) expects a function, got int"):
        getattr(stream, method)(42)


def test_reduce_needs_a_callable() -> None:
    job = mesh.Job("j")
    keyed = job.source(_items()).key_by(_ident)
    with pytest.raises(GraphError, match=r"reduce\(\) expects a function, got str"):
        keyed.reduce("sum")


def test_default_uids_and_names() -> None:
    job = mesh.Job("j")
    src = job.source(sources.Collection([{"k": 1, "v": 2}]))
    keyed = src.map(_ident).filter(bool).flat_map(lambda r: [r]).key_by(lambda r: r["k"])
    keyed.sum("v").sink(sinks.Collect())
    keyed.min("v").sink(sinks.Print())
    keyed.max("v").sink(sinks.JsonLines("out"))
    keyed.count().sink(sinks.Collect())
    keyed.reduce(lambda a, b: a).sink(sinks.Collect())
    ops = [(op.uid, op.name) for op in job.build().graph.operators]
    assert ops == [
        ("source-0", "Source: Collection"),
        ("map-1", "Map"),
        ("filter-2", "Filter"),
        ("flat_map-3", "FlatMap"),
        ("sum-4", "Sum(v)"),
        ("sink-5", "Sink: Collect"),
        ("min-6", "Min(v)"),
        ("sink-7", "Sink: Print"),
        ("max-8", "Max(v)"),
        ("sink-9", "Sink: JsonLines"),
        ("count-10", "Count"),
        ("sink-11", "Sink: Collect"),
        ("reduce-12", "Reduce"),
        ("sink-13", "Sink: Collect"),
    ]


@pytest.mark.parametrize(
    ("make", "kind", "field"),
    [
        (lambda k: k.sum("v"), "sum", "v"),
        (lambda k: k.min("v"), "min", "v"),
        (lambda k: k.max("v"), "max", "v"),
        (lambda k: k.count(), "count", None),
        (lambda k: k.reduce(lambda a, b: b), "reduce", None),
    ],
)
def test_keyed_operators_have_a_key_function_and_a_hash_edge(
    make: Callable[[Any], Any], kind: str, field: str | None
) -> None:
    def key_fn(r: Any) -> Any:
        return r["k"]

    job = mesh.Job("j", parallelism=2)
    keyed = job.source(_items()).key_by(key_fn)
    assert isinstance(keyed, mesh.KeyedStream)
    out = make(keyed)
    assert isinstance(out, mesh.Stream) and not isinstance(out, mesh.KeyedStream)
    out.sink(sinks.Collect())
    built = job.build()
    op = built.graph.operator(1)
    assert op.kind == kind
    definition = built.operator(1)
    assert definition.key_fn is key_fn
    assert definition.field_name == field
    (edge,) = built.graph.inputs_of(1)
    assert edge.partitioning is Partitioning.HASH
    assert built.edge_key_fns == {(0, 1): key_fn}
    # The operator after the keyed one gets an ordinary forward edge.
    (after,) = built.graph.inputs_of(2)
    assert after.partitioning is Partitioning.FORWARD


@pytest.mark.parametrize("method", ["sum", "min", "max"])
def test_aggregations_need_a_field_name(method: str) -> None:
    job = mesh.Job("j")
    keyed = job.source(_items()).key_by(_ident)
    with pytest.raises(GraphError, match="field must be a non-empty string"):
        getattr(keyed, method)("")


def test_key_by_on_a_union_hashes_every_input() -> None:
    job = mesh.Job("j")
    a, b = job.source(_items()), job.source(_items())
    a.union(b).key_by(_ident).count().sink(sinks.Collect())
    built = job.build()
    assert [e.partitioning for e in built.graph.inputs_of(2)] == [Partitioning.HASH] * 2
    assert set(built.edge_key_fns) == {(0, 2), (1, 2)}


def test_union_and_sink_validate_their_arguments() -> None:
    job = mesh.Job("j")
    stream = job.source(_items())
    with pytest.raises(GraphError, match=r"union\(\) expects streams, got list"):
        stream.union([stream])
    other = mesh.Job("other").source(_items())
    with pytest.raises(GraphError, match="different jobs"):
        stream.union(other)
    with pytest.raises(GraphError, match=r"sink\(\) expects a mesh.sinks object, got Collection"):
        stream.sink(_items())


def test_source_validates_its_argument() -> None:
    job = mesh.Job("j")
    with pytest.raises(GraphError, match=r"expects a mesh\.sources object, got Collect"):
        job.source(sinks.Collect())


# -- sources and sinks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: sources.Collection("abc"), TypeError, "got str"),
        (lambda: sources.Collection({"a": 1}), TypeError, "got dict"),
        (lambda: sources.Collection(b"xy"), TypeError, "got bytes"),
        (lambda: sources.TextFile(""), TypeError, "TextFile expects a path or glob string"),
        (lambda: sources.JsonLines(3), TypeError, "JsonLines expects a path or glob string"),
        (lambda: sources.Generator(5), TypeError, "Generator expects a function fn"),
        (lambda: sources.Generator(_ident, count=-1), ValueError, "non-negative int, got -1"),
        (lambda: sources.Generator(_ident, count=2.5), ValueError, "non-negative int, got 2.5"),
        (lambda: sources.Generator(_ident, rate=0), ValueError, "positive number, got 0"),
        (lambda: sources.Generator(_ident, rate="9"), ValueError, "positive number, got '9'"),
        (lambda: sources.Generator(_ident, rate=True), ValueError, "positive number, got True"),
        (lambda: sources.ZmqPull("ipc:///tmp/x"), TypeError, "tcp:// endpoint"),
        (lambda: sinks.JsonLines(""), TypeError, "JsonLines expects a directory path"),
        (lambda: sinks.ZmqPush("localhost:5"), TypeError, "tcp:// endpoint"),
    ],
)
def test_connector_constructors_validate(
    make: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        make()
    assert message in str(info.value)


def test_sources_say_whether_they_are_bounded_and_replayable() -> None:
    assert (_items().bounded, _items().replayable) == (True, True)
    assert sources.TextFile("x.txt").bounded
    with pytest.raises(GraphError, match=r"follow=True\) is not supported yet"):
        sources.JsonLines("x", follow=True)
    assert sources.Generator(_ident, count=3).bounded
    assert not sources.Generator(_ident).bounded
    pull = sources.ZmqPull("tcp://127.0.0.1:6000")
    assert (pull.bounded, pull.replayable) == (False, False)


def test_collection_copies_its_items() -> None:
    items = [1, 2]
    collection = sources.Collection(items)
    items.append(3)
    assert collection.items == [1, 2]
    assert sources.Collection(range(3)).items == [0, 1, 2]
    assert collection.describe() == {"type": "Collection", "items": 2}


def test_descriptions() -> None:
    assert sources.Generator(_ident, count=5, rate=10).describe() == {
        "type": "Generator",
        "count": 5,
        "rate": 10,
    }
    assert sinks.JsonLines("out").describe() == {"type": "JsonLines", "directory": "out"}
    assert sinks.Print().describe() == {"type": "Print"}
    assert sinks.ZmqPush("tcp://127.0.0.1:7000").describe() == {
        "type": "ZmqPush",
        "endpoint": "tcp://127.0.0.1:7000",
    }


# -- the job loader ---------------------------------------------------------------------------


def _job_file(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


ONE_JOB = """
    from mesh import Job, sinks, sources

    job = Job("only", parallelism=2)
    job.source(sources.Collection([1, 2])).map(lambda x: x * 2).sink(sinks.Collect())
    alias = job  # the same Job under two names is still one job
"""

TWO_JOBS = """
    from mesh import Job, sinks, sources

    first = Job("first")
    first.source(sources.Collection([1])).sink(sinks.Collect())
    second = Job("second")
    second.source(sources.Collection([2])).sink(sinks.Collect())
"""


def test_load_job_finds_the_module_level_job(tmp_path: Path) -> None:
    job = load_job(_job_file(tmp_path, ONE_JOB))
    assert isinstance(job, mesh.Job)
    assert job.name == "only"
    assert job.build().graph.config.parallelism == 2


def test_each_import_gets_its_own_module(tmp_path: Path) -> None:
    path = _job_file(tmp_path, ONE_JOB)
    first = import_job_file(path)
    second = import_job_file(path)
    assert first is not second
    assert first.__name__ != second.__name__  # type: ignore[attr-defined]
    assert find_job(first) is not find_job(second)


def test_several_jobs_need_a_name(tmp_path: Path) -> None:
    path = _job_file(tmp_path, TWO_JOBS)
    with pytest.raises(JobCodeError) as info:
        load_job(path)
    message = str(info.value)
    assert "--job" in message
    assert "'first'" in message and "'second'" in message
    assert str(path) in message


def test_job_name_selects_one_of_several(tmp_path: Path) -> None:
    path = _job_file(tmp_path, TWO_JOBS)
    assert load_job(path, "second").name == "second"
    assert load_job(path, "first").name == "first"


def test_unknown_job_name_lists_what_was_found(tmp_path: Path) -> None:
    path = _job_file(tmp_path, TWO_JOBS)
    with pytest.raises(JobCodeError, match=r"no Job named 'third' \(found: 'first', 'second'\)"):
        load_job(path, "third")


def test_a_file_without_a_job_is_refused(tmp_path: Path) -> None:
    path = _job_file(tmp_path, "x = 1\n")
    with pytest.raises(JobCodeError, match="defines no Job at module level"):
        load_job(path)
    with pytest.raises(JobCodeError, match=r"no Job named 'x' \(found: none\)"):
        load_job(path, "x")


def test_a_job_file_that_raises_gives_its_traceback(tmp_path: Path) -> None:
    body = """
        def helper():
            raise RuntimeError("bad config in the job file")

        helper()
    """
    path = _job_file(tmp_path, body)
    with pytest.raises(JobCodeError) as info:
        load_job(path)
    message = str(info.value)
    assert str(path.resolve()) in message
    assert "Traceback (most recent call last)" in message
    assert "in helper" in message
    assert "RuntimeError: bad config in the job file" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_job_file_with_a_syntax_error(tmp_path: Path) -> None:
    path = _job_file(tmp_path, "def broken(:\n")
    with pytest.raises(JobCodeError, match="SyntaxError"):
        load_job(path)


def test_a_job_file_that_exits(tmp_path: Path) -> None:
    path = _job_file(tmp_path, "import sys\nsys.exit(3)\n")
    with pytest.raises(JobCodeError, match=r"called exit\(3\)"):
        load_job(path)


def test_a_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(JobCodeError, match="job file not found"):
        load_job(tmp_path / "nope.py")


def test_job_file_can_import_its_neighbours(tmp_path: Path) -> None:
    (tmp_path / "helpers_for_mesh_test.py").write_text("FACTOR = 7\n")
    body = """
        from helpers_for_mesh_test import FACTOR
        from mesh import Job, sinks, sources

        job = Job(f"factor-{FACTOR}")
        job.source(sources.Collection([1])).sink(sinks.Collect())
    """
    before = list(sys.path)
    try:
        assert load_job(_job_file(tmp_path, body)).name == "factor-7"
        assert sys.path == before
    finally:
        sys.modules.pop("helpers_for_mesh_test", None)


def test_checkpoint_settings_reach_the_job_config() -> None:
    job = mesh.Job(
        "ck",
        checkpoint_interval="250ms",
        checkpoint_mode="at_least_once",
        state_backend="sqlite",
        checkpoint_dir="ckpts",
    )
    job.source(mesh.sources.Collection([1])).sink(mesh.sinks.Collect())
    config = job.build().graph.config
    assert config.checkpoint_interval_ms == 250
    assert config.checkpoint_mode == "at_least_once"
    assert config.state_backend == "sqlite"
    assert config.checkpoint_dir == "ckpts"
    assert job.build(checkpoint_interval_ms=1000).graph.config.checkpoint_interval_ms == 1000
