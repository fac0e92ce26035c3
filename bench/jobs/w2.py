"""W2: key_by(user) and a running sum of value, across nodes (a hash shuffle)."""

import os

from mesh import Job, sinks, sources

DATA = os.environ.get("MESH_BENCH_DATA", "bench/data/events.jsonl")
OUT = os.environ.get("MESH_BENCH_OUT", "bench/results/w2")

job = Job("w2", parallelism=2)
(
    job.source(sources.JsonLines(DATA))
    .key_by(lambda e: e["user"])
    .sum("value")
    .sink(sinks.JsonLines(OUT))
)
