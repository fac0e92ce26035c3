"""State size: MESH_BENCH_KEYS distinct keys, each summed once, held in keyed state.

A second, idle source keeps the job running after the keys are in, so a savepoint of
the full state can be taken.
"""

import os

from mesh import Job, sinks, sources

KEYS = int(os.environ.get("MESH_BENCH_KEYS", "100000"))

job = Job("keys", parallelism=2, state_backend=os.environ.get("MESH_BENCH_BACKEND", "memory"))
keyed = job.source(sources.Generator(lambda i: {"key": f"key-{i}", "v": i}, count=KEYS)).uid("gen")
idle = job.source(sources.Generator(lambda i: {"key": "idle", "v": 0}, rate=1)).uid("idle")
(
    keyed.union(idle)
    .key_by(lambda r: r["key"])
    .sum("v")
    .uid("sums")
    .filter(lambda r: False)
    .sink(sinks.Collect())
)
