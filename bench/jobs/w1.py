"""W1: filter on a word in the text, then map to {user, value} — one chain, one node."""

import os

from mesh import Job, sinks, sources

DATA = os.environ.get("MESH_BENCH_DATA", "bench/data/events.jsonl")
OUT = os.environ.get("MESH_BENCH_OUT", "bench/results/w1")

job = Job("w1", parallelism=1)
(
    job.source(sources.JsonLines(DATA))
    .filter(lambda e: "error" in e["text"])
    .map(lambda e: {"user": e["user"], "value": e["value"]})
    .sink(sinks.JsonLines(OUT))
)
