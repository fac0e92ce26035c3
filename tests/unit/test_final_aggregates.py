"""Keyed aggregations that emit each key's final value at the end of input
(``emit="final"``), and ``KeyedStream.aggregate`` with an ``Aggregate``: per record, and
final; on the memory backend and on SQLite (where most keys live only on disk)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import mesh
from mesh import Aggregate, GraphError, RecordError, sinks, sources
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.factory import build_operator
from mesh.node.operators.records import RecordFailure
from mesh.state.backends import KeyedStateBackend, MemoryBackend, SqliteBackend
from mesh.state.keys import KeyCodec
from mesh.time.clock import ManualClock


class CountSum(Aggregate):
    def create(self) -> dict[str, int]:
        return {"count": 0, "sum": 0}

    def add(self, acc: dict[str, int], record: dict[str, Any]) -> dict[str, int]:
        acc["count"] += 1  # mutates its accumulator, as a fold may
        acc["sum"] += record["v"]
        return acc


class Mean(CountSum):
    def result(self, acc: dict[str, int]) -> float:
        return acc["sum"] / acc["count"]


def _operator(
    make: Callable[[mesh.KeyedStream], mesh.Stream],
    backend: Callable[[], KeyedStateBackend] | None = None,
    *,
    initialize: bool = True,
) -> RuntimeOperator:
    job = mesh.Job("ops")
    stream = job.source(sources.Collection([])).key_by(lambda r: r["user"])
    make(stream).uid("op").sink(sinks.Collect())
    built = job.build()
    (spec,) = [op for op in built.graph.operators if op.uid == "op"]
    make_backend = backend or (lambda: MemoryBackend(KeyCodec(128), ManualClock()))
    operator = build_operator(spec, built.operator(spec.id), backend=make_backend)
    operator.open()
    if initialize:
        anyio.run(operator.initialize, None)
    return operator


def _records(n: int, users: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"user": f"u{rng.randrange(users)}", "v": rng.randrange(100)} for _ in range(n)]


def _totals(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for r in records:
        t = totals.setdefault(r["user"], {"count": 0, "sum": 0})
        t["count"] += 1
        t["sum"] += r["v"]
    return totals


def _run(op: RuntimeOperator, records: list[dict[str, Any]], batch: int = 7) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(records), batch):
        out += op.process(records[start : start + batch])
    return out + anyio.run(op.finish)


def test_aggregate_every_emits_the_running_result_and_never_an_aliased_one() -> None:
    records = [{"user": "a", "v": 1}, {"user": "a", "v": 2}, {"user": "b", "v": 5}]
    op = _operator(lambda k: k.aggregate(CountSum()))
    assert _run(op, records) == [
        {"key": "a", "value": {"count": 1, "sum": 1}},
        {"key": "a", "value": {"count": 2, "sum": 3}},
        {"key": "b", "value": {"count": 1, "sum": 5}},
    ]


def test_aggregate_final_emits_each_key_once_at_the_end() -> None:
    records = _records(500, 23)
    op = _operator(lambda k: k.aggregate(CountSum(), emit="final"))
    out = _run(op, records)
    assert {r["key"]: r["value"] for r in out} == _totals(records)
    assert len(out) == 23
    mean = _run(_operator(lambda k: k.aggregate(Mean(), emit="final")), records)
    assert {r["key"]: r["value"] for r in mean} == {
        user: t["sum"] / t["count"] for user, t in _totals(records).items()
    }


@pytest.mark.parametrize("how", ["count", "sum", "min", "max", "reduce"])
def test_final_is_the_last_of_every(how: str) -> None:
    """For each built-in aggregation, the final output per key is what the running one
    emitted last for that key."""

    def make(emit: str) -> Callable[[mesh.KeyedStream], mesh.Stream]:
        if how == "count":
            return lambda k: k.count(emit=emit)
        if how == "reduce":
            return lambda k: k.reduce(lambda a, b: {**b, "v": a["v"] * 2 + b["v"]}, emit=emit)
        return lambda k: getattr(k, how)("v", emit=emit)

    records = _records(300, 11, seed=2)
    every = _run(_operator(make("every")), records)
    final = _run(_operator(make("final")), records)
    last: dict[str, Any] = {}
    for record in every:
        last[record["key"] if how == "count" else record["user"]] = record
    assert len(final) == len(last) == 11
    assert sorted(final, key=repr) == sorted(last.values(), key=repr)


def test_final_values_come_from_disk_too(tmp_path: Path) -> None:
    """With SQLite state and a tiny cache, most keys are only on disk at the end."""
    records = _records(2000, 400, seed=3)

    def sqlite() -> KeyedStateBackend:
        return SqliteBackend(tmp_path / "state.db", KeyCodec(128), ManualClock(), cache_keys=16)

    op = _operator(lambda k: k.aggregate(CountSum(), emit="final"), sqlite, initialize=False)

    async def run() -> list[Any]:
        assert op.backend is not None
        await op.initialize(None)
        out: list[Any] = []
        for start in range(0, len(records), 50):
            batch = records[start : start + 50]
            await op.backend.before_batch(op.keys_of(batch))
            out += op.process(batch)
            await op.backend.after_batch()
        out += await op.finish()
        await op.close_state()
        return out

    out = anyio.run(run)
    totals = _totals(records)
    assert len(out) == len(totals) > 300
    assert {r["key"]: r["value"] for r in out} == totals


def test_a_raising_add_names_the_record_and_keeps_what_came_before() -> None:
    class Picky(CountSum):
        def add(self, acc: dict[str, int], record: dict[str, Any]) -> dict[str, int]:
            if record["v"] < 0:
                raise ValueError("negative")
            return super().add(acc, record)

    op = _operator(lambda k: k.aggregate(Picky(), emit="final"))
    with pytest.raises(RecordFailure) as failure:
        op.process([{"user": "a", "v": 1}, {"user": "a", "v": -1}, {"user": "a", "v": 5}])
    assert failure.value.index == 1 and failure.value.output == []
    assert "add() raised ValueError: negative" in str(failure.value)
    assert "'v': -1" in str(failure.value)
    assert anyio.run(op.finish) == [{"key": "a", "value": {"count": 1, "sum": 1}}]


def test_bad_arguments_are_named() -> None:
    job = mesh.Job("bad")
    keyed = job.source(sources.Collection([])).key_by(lambda r: r)
    with pytest.raises(GraphError, match="emit must be 'every' or 'final', got 'last'"):
        keyed.count(emit="last")
    with pytest.raises(GraphError, match="not the class CountSum; add"):
        keyed.aggregate(CountSum)  # type: ignore[arg-type]
    with pytest.raises(GraphError, match=r"expects a mesh\.Aggregate, got function"):
        keyed.aggregate(lambda a, r: a)  # type: ignore[arg-type]


def test_the_plan_says_final() -> None:
    job = mesh.Job("plan")
    job.source(sources.Collection([])).key_by(lambda r: r).aggregate(CountSum(), emit="final").uid(
        "agg"
    ).sink(sinks.Collect())
    (spec,) = [op for op in job.build().graph.operators if op.uid == "agg"]
    assert spec.name == "Aggregate(CountSum)" and spec.description == {"emit": "final"}


class MergingCountSum(CountSum):
    def merge(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {"count": a["count"] + b["count"], "sum": a["sum"] + b["sum"]}


@pytest.mark.parametrize("how", ["count", "sum", "min", "max", "reduce", "aggregate"])
def test_partials_from_combining_producers_merge_to_the_same_finals(how: str) -> None:
    """Batch mode: two producers fold their records into partials (over the wire as
    JSON), the aggregation merges them; the finals are those of the records directly."""
    import orjson

    from mesh.node.operators.combine import Combiner
    from mesh.node.operators.keyed import COMBINERS

    def built(mode: str) -> tuple[Any, Any]:
        job = mesh.Job("combine", parallelism=2)
        keyed = job.source(sources.Collection([])).key_by(lambda r: [r["user"]])  # list keys
        if how == "count":
            out = keyed.count(emit="final")
        elif how == "reduce":
            out = keyed.reduce(lambda a, b: {**b, "v": a["v"] + b["v"]}, emit="final")
        elif how == "aggregate":
            out = keyed.aggregate(MergingCountSum(), emit="final")
        else:
            out = getattr(keyed, how)("v", emit="final")
        out.uid("op").sink(sinks.Collect())
        graph = job.build(mode=mode)
        (spec,) = [op for op in graph.graph.operators if op.uid == "op"]
        return spec, graph.operator(spec.id)

    def operator(spec: Any, definition: Any) -> RuntimeOperator:
        op = build_operator(
            spec, definition, backend=lambda: MemoryBackend(KeyCodec(128), ManualClock())
        )
        anyio.run(op.initialize, None)
        return op

    spec, definition = built("batch")
    assert spec.description == {"emit": "final", "combined": True}
    merged = operator(spec, definition)
    records = _records(400, 13, seed=5)
    for half in (records[::2], records[1::2]):
        combiner = Combiner(
            spec,
            definition.key_fn,
            fn=definition.fn,
            field_name=definition.field_name,
            aggregate=definition.aggregate,
            combine=COMBINERS.get(spec.kind),
        )
        for start in range(0, len(half), 9):
            combiner.add(half[start : start + 9])
        partials = orjson.loads(orjson.dumps(combiner.partials()))
        assert 0 < len(partials) <= 13
        assert merged.process(partials) == []
    direct_spec, direct_definition = built("streaming")
    assert "combined" not in direct_spec.description
    expected = _run(operator(direct_spec, direct_definition), records)

    def canonical(rows: list[Any]) -> list[bytes]:
        return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)

    assert canonical(anyio.run(merged.finish)) == canonical(expected)


def test_partials_merge_on_sqlite_with_keys_only_on_disk(tmp_path: Path) -> None:
    """The runner's before/process/after sequence on SQLite state with a tiny cache: the
    keys a batch of pairs touches are the pairs' keys, so nothing is lost."""
    import orjson

    from mesh.node.operators.combine import Combiner

    job = mesh.Job("combine", parallelism=2, state_backend="sqlite")
    job.source(sources.Collection([])).key_by(lambda r: r["user"]).aggregate(MergingCountSum()).uid(
        "op"
    ).sink(sinks.Collect())
    built = job.build(mode="batch")
    (spec,) = [op for op in built.graph.operators if op.uid == "op"]
    definition = built.operator(spec.id)
    op = build_operator(
        spec,
        definition,
        backend=lambda: SqliteBackend(
            tmp_path / "state.db", KeyCodec(128), ManualClock(), cache_keys=8
        ),
    )
    records = _records(3000, 300, seed=9)

    async def run() -> list[Any]:
        assert op.backend is not None
        await op.initialize(None)
        for half in (records[::2], records[1::2]):
            combiner = Combiner(spec, definition.key_fn, aggregate=definition.aggregate)
            combiner.add(half)
            pairs = orjson.loads(orjson.dumps(combiner.partials()))
            for start in range(0, len(pairs), 50):
                batch = pairs[start : start + 50]
                await op.backend.before_batch(op.keys_of(batch))
                assert op.process(batch) == []
                await op.backend.after_batch()
        out = await op.finish()
        again = await op.finish()  # a restore after this would emit nothing twice
        await op.close_state()
        assert again == []
        return out

    out = anyio.run(run)
    assert {r["key"]: r["value"] for r in out} == _totals(records)


def test_a_combiner_names_the_aggregation_and_the_record_at_fault() -> None:
    from mesh.node.operators.combine import Combiner
    from mesh.node.operators.keyed import COMBINERS

    job = mesh.Job("combine", parallelism=2)
    job.source(sources.Collection([])).key_by(lambda r: r["user"]).sum("v").uid("sums").sink(
        sinks.Collect()
    )
    built = job.build(mode="batch")
    (spec,) = [op for op in built.graph.operators if op.uid == "sums"]
    definition = built.operator(spec.id)
    combiner = Combiner(spec, definition.key_fn, field_name="v", combine=COMBINERS[spec.kind])
    with pytest.raises(RecordError) as error:
        combiner.add([{"user": "a", "v": 1}, {"user": "b"}, {"user": "c", "v": 3}])
    message = str(error.value)
    assert "operator 'sums' (Sum(v)), combining before the keyed exchange: KeyError" in message
    assert "on record {'user': 'b'}" in message
