"""Skewed paths into one operator: a fast source and a slow one (its records go through
an expensive map) meet in a keyed count. With aligned (exactly_once) checkpoints the
count blocks the fast channel from the fast barrier until the slow path's barrier has
crawled through the backlog of the expensive map; at_least_once keeps reading it."""

import os
import time

from mesh import Job, sinks, sources

FAST = int(os.environ.get("MESH_BENCH_FAST", "3000000"))


def burn(record):
    end = time.perf_counter() + 0.0002  # 200 us of work per record on the slow path
    while time.perf_counter() < end:
        pass
    return record


job = Job(
    "skew",
    parallelism=1,
    checkpoint_interval=os.environ.get("MESH_BENCH_INTERVAL") or None,
    checkpoint_mode=os.environ.get("MESH_BENCH_MODE", "exactly_once"),
)
fast = job.source(sources.Generator(lambda i: {"k": i % 64}, count=FAST)).uid("fast")
slow = (
    job.source(sources.Generator(lambda i: {"k": i % 64}))
    .uid("slow")
    .slot_sharing_group("slow")
    .map(burn)
    .uid("burn")
)
fast.union(slow).key_by(lambda r: r["k"]).count().uid("count").filter(lambda r: False).sink(
    sinks.Collect()
)
