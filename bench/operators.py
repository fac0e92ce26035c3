"""Operator hot paths in one process, without the runtime around them; prints JSON.

    python bench/operators.py                    # every operator, best of 5
    python bench/operators.py --records 200000 --rounds 7 --only process

Each operator is built through the public API (a job with one operator after a
source) and the node's operator factory, over the memory backend, then given
``--records`` records in batches of ``--batch`` (untimed and, for process functions,
timed with event timestamps). The figure is records per second of the best round,
next to a plain ``list(map(...))`` loop over the same batches measured in the same run
(machines differ up to 3x; compare ratios, not bare figures).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mesh  # noqa: E402
from mesh import sinks, sources  # noqa: E402
from mesh.node.operators.base import RuntimeOperator  # noqa: E402
from mesh.node.operators.factory import build_operator  # noqa: E402
from mesh.state.backends import MemoryBackend  # noqa: E402
from mesh.state.keys import KeyCodec  # noqa: E402
from mesh.time.clock import ManualClock  # noqa: E402


def _operator(make: Callable[[mesh.Stream], mesh.Stream]) -> RuntimeOperator:
    job = mesh.Job("bench")
    make(job.source(sources.Collection([]))).uid("op").sink(sinks.Collect())
    built = job.build()
    (spec,) = [op for op in built.graph.operators if op.uid == "op"]
    operator = build_operator(
        spec,
        built.operator(spec.id),
        backend=lambda: MemoryBackend(KeyCodec(spec.max_parallelism), ManualClock()),
    )
    operator.open()
    return operator


def _emit(record: Any, ctx: Any) -> Any:
    return (record,)


OPERATORS: dict[str, Callable[[mesh.Stream], mesh.Stream]] = {
    "map": lambda s: s.map(lambda r: r["value"]),
    "filter": lambda s: s.filter(lambda r: r["value"] % 2 == 0),
    "count": lambda s: s.key_by(lambda r: r["user"]).count(),
    "sum": lambda s: s.key_by(lambda r: r["user"]).sum("value"),
    "reduce": lambda s: s.key_by(lambda r: r["user"]).reduce(
        lambda acc, r: {**acc, "value": acc["value"] + r["value"]}
    ),
    "process": lambda s: s.process(_emit),
    "keyed_process": lambda s: s.key_by(lambda r: r["user"]).process(_emit),
}

#: Operators also measured with timestamps (process_timed).
TIMED = ("process", "keyed_process")


def _batches(records: int, batch: int) -> list[list[dict[str, Any]]]:
    data = [{"user": f"u{i % 1000}", "value": i} for i in range(records)]
    return [data[i : i + batch] for i in range(0, records, batch)]


def _best(run: Callable[[], None], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description="operator hot paths (JSON on stdout)")
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=sorted(OPERATORS), action="append")
    args = parser.parse_args()
    batches = _batches(args.records, args.batch)
    stamps = [list(range(len(b))) for b in batches]

    def plain() -> None:
        fn = lambda r: r["value"]  # noqa: E731
        for b in batches:
            list(map(fn, b))

    results: dict[str, Any] = {"plain_map": args.records / _best(plain, args.rounds)}
    for name, make in OPERATORS.items():
        if args.only and name not in args.only:
            continue
        op = _operator(make)

        def untimed(op: RuntimeOperator = op) -> None:
            for b in batches:
                op.process(b)

        results[name] = args.records / _best(untimed, args.rounds)
        if name in TIMED:

            def timed(op: RuntimeOperator = op) -> None:
                for b, t in zip(batches, stamps, strict=True):
                    op.process_timed(b, t)

            results[f"{name}_timed"] = args.records / _best(timed, args.rounds)
    print(
        orjson.dumps(
            {
                "python": platform.python_version(),
                "records": args.records,
                "batch": args.batch,
                "rounds": args.rounds,
                "records_per_s": {k: round(v) for k, v in results.items()},
                "ratio_to_plain_map": {
                    k: round(v / results["plain_map"], 3) for k, v in results.items()
                },
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
