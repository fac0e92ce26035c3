"""W3: 10 s tumbling event-time windows, count per user, watermark = max ts - 2 s.

MESH_BENCH_ALIGN (e.g. "30s") aligns the source subtasks' watermarks with that drift.
"""

import os

from mesh import Job, WatermarkStrategy, sinks, sources, windows

DATA = os.environ.get("MESH_BENCH_DATA", "bench/data/events.jsonl")
OUT = os.environ.get("MESH_BENCH_OUT", "bench/results/w3")

job = Job(
    "w3",
    parallelism=2,
    checkpoint_interval=os.environ.get("MESH_BENCH_INTERVAL") or None,
)
ALIGN = os.environ.get("MESH_BENCH_ALIGN") or None
events = job.source(
    sources.JsonLines(DATA),
    watermarks=WatermarkStrategy.bounded(
        "2s",
        timestamp=lambda e: e["ts"],
        align_group="events" if ALIGN else None,
        max_drift=ALIGN,
    ),
).uid("events")
(
    events.key_by(lambda e: e["user"])
    .window(windows.Tumbling("10s"))
    .count()
    .uid("windows")
    .sink(sinks.JsonLines(OUT))
    .uid("out")
)
