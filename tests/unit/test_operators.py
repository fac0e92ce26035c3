"""Runtime operators and record encoding (mesh/node/operators.py, mesh/node/writers.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import anyio
import orjson
import pytest

import mesh
from mesh import EncodingError, GraphError, RecordError, sinks, sources
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.factory import build_operator
from mesh.node.operators.records import describe_record, encode_batch, encode_lines
from mesh.state.backends import MemoryBackend
from mesh.state.keys import KeyCodec
from mesh.time.clock import ManualClock


def memory_backend() -> MemoryBackend:
    return MemoryBackend(KeyCodec(128), ManualClock())


def _operator(make: Callable[[mesh.Stream], mesh.Stream], uid: str = "op") -> RuntimeOperator:
    """Build the runtime operator ``make`` adds after a source, via the public API."""
    job = mesh.Job("ops")
    make(job.source(sources.Collection([]))).uid(uid).sink(sinks.Collect())
    built = job.build()
    (spec,) = [op for op in built.graph.operators if op.uid == uid]
    operator = build_operator(spec, built.operator(spec.id), backend=memory_backend)
    operator.open()
    return operator


def _spec(uid: str = "emit", name: str = "Map") -> OperatorSpec:
    job = mesh.Job("enc")
    job.source(sources.Collection([])).map(lambda r: r).uid(uid).name(name).sink(sinks.Collect())
    (spec,) = [op for op in job.build().graph.operators if op.uid == uid]
    return spec


# -- stateless operators ----------------------------------------------------------------------


def test_map_over_batches() -> None:
    op = _operator(lambda s: s.map(lambda x: x * 2))
    assert op.process([1, 2, 3]) == [2, 4, 6]
    assert op.process([]) == []
    assert op.process([10]) == [20]
    assert anyio.run(op.finish) == []


def test_filter_keeps_records_whose_result_is_true() -> None:
    op = _operator(lambda s: s.filter(lambda r: r["n"] % 2 == 0))
    assert op.process([{"n": 1}, {"n": 2}, {"n": 4}]) == [{"n": 2}, {"n": 4}]
    op = _operator(lambda s: s.filter(lambda r: r))  # truthiness, like Python's filter
    assert op.process([0, 1, "", "a", None, [], [0]]) == [1, "a", [0]]


def test_flat_map_flattens_any_iterable() -> None:
    op = _operator(lambda s: s.flat_map(str.split))
    assert op.process(["a b", "", "c"]) == ["a", "b", "c"]

    def pairs(n: int) -> Any:
        for i in range(n):
            yield (n, i)

    op = _operator(lambda s: s.flat_map(pairs))
    assert op.process([0, 2, 1]) == [(2, 0), (2, 1), (1, 0)]


@pytest.mark.parametrize(
    ("make", "batch", "what"),
    [
        (
            lambda s: s.map(lambda r: 10 // r["x"]),
            [{"x": 1}, {"id": 7, "x": 0}],
            "ZeroDivisionError",
        ),
        (lambda s: s.filter(lambda r: r["x"] > 0), [{"x": 1}, {"id": 7, "y": 0}], "KeyError: 'x'"),
        (lambda s: s.flat_map(lambda r: r["x"]), [{"x": [1]}, {"id": 7, "x": 5}], "TypeError"),
    ],
    ids=["map", "filter", "flat_map"],
)
def test_user_function_raising_names_the_operator_and_record(
    make: Callable[[Any], Any], batch: list[Any], what: str
) -> None:
    op = _operator(make, uid="parse-events")
    with pytest.raises(RecordError) as info:
        op.process(batch)
    message = str(info.value)
    assert "operator 'parse-events'" in message
    assert what in message
    assert "on record {'id': 7" in message
    assert info.value.__cause__ is not None


def test_error_message_shortens_huge_records() -> None:
    op = _operator(lambda s: s.map(lambda r: r["missing"]))
    with pytest.raises(RecordError) as info:
        op.process([{"blob": "x" * 100_000, "more": list(range(10_000))}])
    assert len(str(info.value)) < 500
    assert "'blob'" in str(info.value)


def test_describe_record_survives_a_broken_repr() -> None:
    class Weird:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert describe_record(Weird()).startswith("<Weird")
    assert describe_record({"a": 1}) == "{'a': 1}"


# -- keyed operators --------------------------------------------------------------------------


def _by_user(s: mesh.Stream) -> mesh.KeyedStream:
    return s.key_by(lambda r: r["user"])


def test_reduce_is_running_across_batches() -> None:
    op = _operator(lambda s: _by_user(s).reduce(lambda a, b: {**b, "n": a["n"] + b["n"]}))
    first = op.process([{"user": "a", "n": 1}, {"user": "b", "n": 10}, {"user": "a", "n": 2}])
    assert first == [{"user": "a", "n": 1}, {"user": "b", "n": 10}, {"user": "a", "n": 3}]
    assert op.process([{"user": "b", "n": 5}, {"user": "a", "n": 4}]) == [
        {"user": "b", "n": 15},
        {"user": "a", "n": 7},
    ]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("sum", [3, 10, 8, 12, 9]),
        ("min", [3, 10, 3, 2, 1]),
        ("max", [3, 10, 5, 10, 5]),
    ],
)
def test_sum_min_max_are_running_across_batches(method: str, expected: list[int]) -> None:
    op = _operator(lambda s: getattr(_by_user(s), method)("v"))
    records = [
        {"user": "a", "v": 3, "i": 0},
        {"user": "b", "v": 10, "i": 1},
        {"user": "a", "v": 5, "i": 2},
    ]
    out = op.process(records)
    out += op.process([{"user": "b", "v": 2, "i": 3}, {"user": "a", "v": 1, "i": 4}])
    assert [r["v"] for r in out] == expected
    # The emitted record is the incoming one with the field set to the running value.
    assert [(r["user"], r["i"]) for r in out] == [("a", 0), ("b", 1), ("a", 2), ("b", 3), ("a", 4)]
    assert records[0] == {"user": "a", "v": 3, "i": 0}, "input records are not mutated"


def test_sum_of_floats_and_ints() -> None:
    op = _operator(lambda s: _by_user(s).sum("v"))
    out = op.process([{"user": 1, "v": 0.5}, {"user": 1, "v": 2}])
    assert [r["v"] for r in out] == [0.5, 2.5]


def test_count_emits_key_and_running_count() -> None:
    op = _operator(lambda s: s.key_by(lambda w: w).count())
    assert op.process(["a", "b", "a"]) == [
        {"key": "a", "count": 1},
        {"key": "b", "count": 1},
        {"key": "a", "count": 2},
    ]
    assert op.process(["a"]) == [{"key": "a", "count": 3}]


def test_equal_keys_share_state_whatever_their_type() -> None:
    op = _operator(lambda s: s.key_by(lambda r: r).count())
    out = op.process([1, 1.0, True, 2])
    assert [r["count"] for r in out] == [1, 2, 3, 1]


def test_list_keys_work_for_every_keyed_operator() -> None:
    def key(r: Any) -> Any:
        return [r["a"], r["b"]]

    records = [{"a": 1, "b": "x", "v": 1}, {"a": 1, "b": "y", "v": 2}, {"a": 1, "b": "x", "v": 4}]
    count = _operator(lambda s: s.key_by(key).count())
    counted = orjson.loads(encode_batch(count.spec, count.process(records)))
    assert counted == [
        {"key": [1, "x"], "count": 1},
        {"key": [1, "y"], "count": 1},
        {"key": [1, "x"], "count": 2},
    ]
    total = _operator(lambda s: s.key_by(key).sum("v"))
    assert [r["v"] for r in total.process(records)] == [1, 2, 5]
    assert [r["v"] for r in total.process(records[:1])] == [6]
    reduced = _operator(lambda s: s.key_by(key).reduce(lambda a, b: {**b, "v": a["v"] * b["v"]}))
    assert [r["v"] for r in reduced.process(records)] == [1, 2, 4]


def test_list_key_and_tuple_key_are_the_same_key() -> None:
    op = _operator(lambda s: s.key_by(lambda r: r).count())
    assert [r["count"] for r in op.process([[1, "a"], (1, "a"), [1.0, "a"]])] == [1, 2, 3]


def test_sum_on_a_record_without_the_field_names_the_field() -> None:
    op = _operator(lambda s: _by_user(s).sum("amount"), uid="totals")
    ok = {"user": "a", "amount": 5}
    with pytest.raises(RecordError) as info:
        op.process([ok, {"user": "a", "amnt": 1}])
    message = str(info.value)
    assert "operator 'totals'" in message
    assert "'amount' field" in message
    assert "'amnt'" in message
    # The records before the bad one were applied.
    assert op.process([ok]) == [{"user": "a", "amount": 10}]


def test_sum_on_a_non_dict_record() -> None:
    op = _operator(lambda s: s.key_by(lambda r: 0).sum("v"), uid="totals")
    with pytest.raises(RecordError, match=r"needs dict records with a 'v' field.*on record 42"):
        op.process([42])


def test_sum_of_incompatible_values_says_it_cannot_combine() -> None:
    op = _operator(lambda s: _by_user(s).max("v"), uid="top")
    with pytest.raises(RecordError) as info:
        op.process([{"user": "a", "v": 1}, {"user": "a", "v": "one"}])
    assert "operator 'top'" in str(info.value)
    assert "cannot combine field 'v'" in str(info.value)


def test_reduce_function_raising_names_the_operator() -> None:
    op = _operator(lambda s: _by_user(s).reduce(lambda a, b: a["n"] / b["n"]), uid="ratio")
    with pytest.raises(RecordError) as info:
        op.process([{"user": "u", "n": 1}, {"user": "u", "n": 0, "tag": "zero"}])
    assert "operator 'ratio'" in str(info.value)
    assert "ZeroDivisionError" in str(info.value)
    assert "'tag': 'zero'" in str(info.value)


@pytest.mark.parametrize("method", ["count", "sum", "reduce"])
def test_key_function_raising_names_the_operator(method: str) -> None:
    def make(s: mesh.Stream) -> mesh.Stream:
        keyed = s.key_by(lambda r: r["user"])
        if method == "count":
            return keyed.count()
        if method == "sum":
            return keyed.sum("v")
        return keyed.reduce(lambda a, b: b)

    op = _operator(make, uid="keyed")
    with pytest.raises(RecordError) as info:
        op.process([{"user": "a", "v": 1}, {"name": "b", "v": 2}])
    assert "operator 'keyed'" in str(info.value)
    assert "key_by function raised KeyError" in str(info.value)
    assert "'name': 'b'" in str(info.value)


def test_unusable_key_names_the_operator() -> None:
    op = _operator(lambda s: s.key_by(lambda r: r).count(), uid="keyed")
    with pytest.raises(RecordError, match=r"operator 'keyed'.*unusable key"):
        op.process([{"a": 1}])


@pytest.mark.parametrize("method", ["count", "sum", "reduce"])
def test_key_function_raising_type_error_names_the_operator(method: str) -> None:
    def make(s: mesh.Stream) -> mesh.Stream:
        keyed = s.key_by(lambda r: r["user"])
        if method == "count":
            return keyed.count()
        if method == "sum":
            return keyed.sum("v")
        return keyed.reduce(lambda a, b: b)

    op = _operator(make, uid="keyed")
    with pytest.raises(RecordError, match="operator 'keyed'"):
        op.process(["not a dict"])


def test_list_key_holding_a_dict_names_the_operator() -> None:
    op = _operator(lambda s: s.key_by(lambda r: [r]).count(), uid="keyed")
    with pytest.raises(RecordError, match="operator 'keyed'"):
        op.process([{"a": 1}])


def test_keyed_kind_without_a_key_function_is_refused() -> None:
    job = mesh.Job("j")
    job.source(sources.Collection([])).map(lambda r: r).uid("m").sink(sinks.Collect())
    built = job.build()
    spec = built.graph.operator(1)
    definition = dataclasses.replace(built.operator(1), kind="count")
    with pytest.raises(GraphError, match="operator 'm' \\(count\\) needs a keyed stream"):
        build_operator(spec, definition, backend=memory_backend)


# -- encoding ---------------------------------------------------------------------------------


def test_encode_batch_is_a_json_array() -> None:
    spec = _spec()
    batch = [{"a": 1}, [1, (2, 3)], "s", 1.5, None, True]
    assert orjson.loads(encode_batch(spec, batch)) == [
        {"a": 1},
        [1, [2, 3]],
        "s",
        1.5,
        None,
        True,
    ]
    assert encode_batch(spec, []) == b"[]"


def test_encode_lines_is_one_json_value_per_line() -> None:
    spec = _spec()
    assert encode_lines(spec, [{"a": 1}, (1, 2), "x"]) == b'{"a":1}\n[1,2]\n"x"\n'
    assert encode_lines(spec, []) == b""


@pytest.mark.parametrize(
    ("encode", "verb"), [(encode_batch, "emitted"), (encode_lines, "received")]
)
def test_unencodable_record_names_the_operator_and_type(
    encode: Callable[[OperatorSpec, list[Any]], bytes], verb: str
) -> None:
    spec = _spec(uid="tokenize", name="Tokenize")
    with pytest.raises(EncodingError) as info:
        encode(spec, [{"ok": 1}, {1, 2}, {"ok": 2}])
    message = str(info.value)
    assert "operator 'tokenize' (Tokenize)" in message
    assert f"{verb} a record of type set" in message
    assert isinstance(info.value, RecordError)


@pytest.mark.parametrize(
    ("record", "type_name"),
    [(object(), "object"), (b"bytes", "bytes"), ({"nested": {1}}, "dict"), (2**70, "int")],
)
def test_other_unencodable_records(record: Any, type_name: str) -> None:
    with pytest.raises(EncodingError, match=f"operator 'emit'.*record of type {type_name} "):
        encode_batch(_spec(), [record])


def test_reduce_that_mutates_its_accumulator_emits_snapshots() -> None:
    job = mesh.Job("mutating")
    stream = job.source(sources.Collection([1]))

    def add(acc: dict, record: dict) -> dict:
        acc["n"] += record["n"]
        return acc

    stream.key_by(lambda r: r["k"]).reduce(add).uid("adder").sink(sinks.Collect())
    built = job.build()
    op = build_operator(built.graph.operator(1), built.operator(1), backend=memory_backend)
    out = op.process([{"k": "a", "n": 1}, {"k": "a", "n": 1}, {"k": "b", "n": 5}])
    out += op.process([{"k": "a", "n": 1}])
    assert out == [
        {"k": "a", "n": 1},
        {"k": "a", "n": 2},
        {"k": "b", "n": 5},
        {"k": "a", "n": 3},
    ]


# -- failures at a record: what dead letters are built on ---------------------------------


class Bad(mesh.KeyedProcessFunction):
    def process(self, record, ctx):  # type: ignore[no-untyped-def]
        total = ctx.state.value("total")
        yield "partial"  # yielded before raising: not output
        if record["v"] < 0:
            raise ValueError("negative")
        total.set((total.get() or 0) + record["v"])
        yield total.get()


A1, A2, A3 = ({"k": "a", "v": v} for v in (1, 2, 3))


@pytest.mark.parametrize(
    ("make", "poison", "before"),
    [
        (lambda s: s.map(lambda r: 10 // r["v"]), {"k": "a", "v": 0}, [10, 5]),
        (lambda s: s.filter(lambda r: 10 // r["v"]), {"k": "a", "v": 0}, [A1, A2]),
        (lambda s: s.flat_map(lambda r: [r["v"]] * (4 // r["v"])), {"v": 0}, [1] * 4 + [2] * 2),
        (
            lambda s: s.key_by(lambda r: r["k"]).reduce(lambda a, r: {**a, "v": a["v"] + r["v"]}),
            {"k": "a", "v": None},
            [A1, A3],
        ),
        (
            lambda s: s.key_by(lambda r: r["k"]).count(),
            {"v": 0},
            [{"key": "a", "count": n} for n in (1, 2)],
        ),
        (lambda s: s.key_by(lambda r: r["k"]).sum("v"), {"k": "a", "v": "x"}, [A1, A3]),
        (
            lambda s: s.key_by(lambda r: r["k"]).process(Bad()),
            {"k": "a", "v": -1},
            ["partial", 1, "partial", 3],
        ),
    ],
    ids=["map", "filter", "flat_map", "reduce", "count-key", "sum", "keyed-process"],
)
def test_a_failing_record_is_located_with_the_output_before_it(
    make: Callable[[mesh.Stream], mesh.Stream], poison: Any, before: list[Any]
) -> None:
    from mesh.node.operators.records import RecordFailure

    op = _operator(make)
    with pytest.raises(RecordFailure) as info:
        op.process([A1, A2, poison, A3])
    failure = info.value
    assert (failure.index, failure.output) == (2, before)
    assert failure.__cause__ is not None  # the user's exception, with its traceback
    # The batch goes on after it; the records before it were applied exactly once.
    after = op.process([A3])
    if op.spec.kind in ("reduce", "sum"):
        assert after == [{"k": "a", "v": 6}]
    elif op.spec.kind == "count":
        assert after == [{"key": "a", "count": 3}]
    elif op.spec.kind == "keyed_process":
        assert after == ["partial", 6]
