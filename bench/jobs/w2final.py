"""W2, final totals: per-user count and sum of value, emitted once per user at the end
of input (``aggregate(..., emit="final")``), across nodes.

MESH_BENCH_JOB_MODE ("streaming" or "batch") picks the job's mode; in batch mode the
sources combine before the keyed exchange.
"""

import os

from mesh import Aggregate, Job, sinks, sources

DATA = os.environ.get("MESH_BENCH_DATA", "bench/data/events.jsonl")
OUT = os.environ.get("MESH_BENCH_OUT", "bench/results/w2final")


class CountSum(Aggregate):
    def create(self):
        return [0, 0]

    def add(self, acc, event):
        acc[0] += 1
        acc[1] += event["value"]
        return acc

    def merge(self, a, b):
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc):
        return {"count": acc[0], "sum": acc[1]}


job = Job("w2final", parallelism=2, mode=os.environ.get("MESH_BENCH_JOB_MODE", "streaming"))
(
    job.source(sources.JsonLines(DATA))
    .key_by(lambda e: e["user"])
    .aggregate(CountSum(), emit="final")
    .sink(sinks.JsonLines(OUT))
)
