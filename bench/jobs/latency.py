"""W1 at a fixed rate, for latency: records are stamped when the source makes them and
again just before the sink. ``MESH_BENCH_HOP=1`` puts a network hop (rebalance to
another node) between the source and the filter, so buffer_timeout matters."""

import os
import time

from mesh import Job, sinks, sources

RATE = float(os.environ.get("MESH_BENCH_RATE", "200000"))
SECONDS = float(os.environ.get("MESH_BENCH_SECONDS", "10"))
HOP = os.environ.get("MESH_BENCH_HOP") == "1"
OUT = os.environ.get("MESH_BENCH_OUT", "bench/results/latency")
WORDS = "alpha bravo error charlie delta echo foxtrot golf".split()
TEXTS = [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(6)) for i in range(97)]


def make(i):
    return {"user": f"u{i % 1000}", "value": i % 100, "text": TEXTS[i % 97], "t": time.time()}


job = Job("latency", parallelism=1, buffer_timeout="5ms")
events = job.source(sources.Generator(make, count=int(RATE * SECONDS), rate=RATE))
if HOP:
    events = events.rebalance().map(lambda e: e).set_parallelism(2).name("hop")
(
    events.filter(lambda e: "error" in e["text"])
    .map(lambda e: {"user": e["user"], "value": e["value"], "t": e["t"]})
    .map(lambda r: {**r, "lat_ms": (time.time() - r["t"]) * 1000.0})
    .sink(sinks.JsonLines(OUT))
)
