"""W2: key_by(user) and a running sum of value, across nodes (a hash shuffle).

MESH_BENCH_INTERVAL (e.g. "1s"), MESH_BENCH_MODE and MESH_BENCH_BACKEND turn on
checkpoints for the checkpoint benchmarks.
"""

import os

from mesh import Job, sinks, sources

DATA = os.environ.get("MESH_BENCH_DATA", "bench/data/events.jsonl")
OUT = os.environ.get("MESH_BENCH_OUT", "bench/results/w2")

job = Job(
    "w2",
    parallelism=2,
    checkpoint_interval=os.environ.get("MESH_BENCH_INTERVAL") or None,
    checkpoint_mode=os.environ.get("MESH_BENCH_MODE", "exactly_once"),
    state_backend=os.environ.get("MESH_BENCH_BACKEND", "memory"),
)
(
    job.source(sources.JsonLines(DATA))
    .uid("events")
    .key_by(lambda e: e["user"])
    .sum("value")
    .uid("sums")
    .sink(sinks.JsonLines(OUT))
    .uid("out")
)
