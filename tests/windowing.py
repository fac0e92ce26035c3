"""Helpers for event-time tests: window operators driven by hand, and the batch answers
windowed streams must match."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from mesh import Job, WatermarkStrategy, sinks, sources
from mesh.api.windowed import WindowedStream
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.factory import build_operator
from mesh.state.backends import MemoryBackend
from mesh.state.keys import KeyCodec
from mesh.time.clock import ManualClock
from mesh.time.windows import sliding_starts, tumbling_start

Result = dict[tuple[Any, int | None, int | None], Any]


def window_operator(
    window: Callable[[WindowedStream], Any],
    *,
    assigner: Any,
    clock: ManualClock | None = None,
) -> RuntimeOperator:
    """The runtime window operator of ``key_by(r["k"]).window(assigner)`` + ``window``."""
    job = Job("windows")
    stream = job.source(
        sources.Collection([]),
        watermarks=WatermarkStrategy.bounded(0, timestamp=lambda r: r["ts"]),
    )
    window(stream.key_by(lambda r: r["k"]).window(assigner)).sink(sinks.Collect())
    built = job.build()
    spec = next(op for op in built.graph.operators if op.kind == "window")
    clock = clock or ManualClock(0)
    op = build_operator(
        spec,
        built.operator(spec.id),
        backend=lambda: MemoryBackend(KeyCodec(spec.max_parallelism), clock),
    )
    op.open()
    anyio.run(op.initialize, None)
    return op


def drive(
    op: RuntimeOperator, steps: Iterable[tuple[str, Any]]
) -> tuple[list[Any], list[tuple[str, Any]]]:
    """Run ``steps`` — ("records", [...]) or ("watermark", ts) or ("clock", now) — through
    ``op``; returns (output records, side-output (tag, record) pairs)."""
    out: list[Any] = []
    side: list[tuple[str, Any]] = []

    async def run() -> None:
        for what, arg in steps:
            if what == "records":
                made, _ = op.process_timed(arg, [r["ts"] for r in arg])
            elif what == "watermark":
                made, _ = await op.on_watermark(arg)
            else:
                made, _ = await op.on_processing_time(arg)
            out.extend(made)
            side.extend((tag, record) for tag, record, _ in op.side_records)
            op.side_records.clear()

    anyio.run(run)
    return out, side


def by_window(out: list[Any], field: str = "count") -> Result:
    """Window results keyed by (key, start, end); fails on a window emitted twice."""
    found: Result = {}
    for r in out:
        index = (r["key"], r["window_start"], r["window_end"])
        assert index not in found, f"window {index} emitted twice"
        found[index] = r[field]
    return found


def batch_windows(
    events: list[dict[str, Any]],
    kind: str,
    *,
    size: int = 0,
    slide: int = 0,
    gap: int = 0,
    value: Callable[[dict[str, Any]], Any] = lambda e: 1,
) -> Result:
    """The windowed sums of ``value(e)`` a batch computation gives (count: value 1)."""
    sums: dict[tuple[Any, int, int], Any] = defaultdict(int)
    if kind == "tumbling":
        for e in events:
            start = tumbling_start(e["ts"], size)
            sums[(e["k"], start, start + size)] += value(e)
    elif kind == "sliding":
        for e in events:
            for start in sliding_starts(e["ts"], size, slide):
                sums[(e["k"], start, start + size)] += value(e)
    else:  # session: records at most gap apart share one
        per_key: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            per_key[e["k"]].append(e)
        for key, items in per_key.items():
            items.sort(key=lambda e: e["ts"])
            start = last = items[0]["ts"]
            total = 0
            for e in items:
                if e["ts"] - last > gap:
                    sums[(key, start, last + gap)] += total
                    start, total = e["ts"], 0
                total += value(e)
                last = e["ts"]
            sums[(key, start, last + gap)] += total
    return dict(sums)


def random_events(seed: int, count: int, max_delay: int, keys: int = 5) -> list[dict[str, Any]]:
    """``count`` events whose disorder stays within ``max_delay`` (each is at most that far
    behind the largest timestamp before it), with values ``v``."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    clock, highest = 0, None
    for _ in range(count):
        clock += rng.randint(0, 40)
        ts = clock - rng.randint(0, max_delay) if rng.random() < 0.3 else clock
        if highest is not None:
            ts = max(ts, highest - max_delay)
        highest = ts if highest is None else max(highest, ts)
        events.append({"k": f"k{rng.randrange(keys)}", "ts": ts, "v": rng.randint(1, 9)})
    return events
