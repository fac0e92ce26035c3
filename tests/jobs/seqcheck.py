"""The sequence-check job (after Flink's allround test): per key, values 1..N.

A Generator makes record i = {"key": i % KEYS, "seq": i // KEYS + 1}; every key's
records come from one source split, in order. A keyed checker remembers the last seq
per key (keyed state) and emits an alert when ``seq - last != 1`` (exactly-once) or
``seq - last > 1`` (at-least-once: repeats are allowed, gaps are not); it passes every
record on to an exactly-once sink. A correct run, across any number of restarts and
rescalings, has no alerts and every (key, seq) exactly once (at least once) in the
committed output.

Settings come from the environment (read at import on the client and every node):
SEQ_KEYS, SEQ_N, SEQ_RATE (records/s, 0 = unlimited), SEQ_OUT, SEQ_BACKEND, SEQ_MODE,
SEQ_INTERVAL, SEQ_SINK ("jsonlines" or "sqlite"), SEQ_PAD (bytes of padding per state),
SEQ_RESTARTS and SEQ_RESTART_DELAY (a fixed-delay restart strategy; default: mesh's),
SEQ_POISON ("key:seq,..." records a map before the checker raises on; the checker
expects them missing), SEQ_ON_ERROR ("fail" or "dead_letter", into SEQ_DEAD).
"""

import os

from mesh import Job, KeyedProcessFunction, RestartStrategy, sinks, sources

KEYS = int(os.environ.get("SEQ_KEYS", "12"))
N = int(os.environ.get("SEQ_N", "1000"))
RATE = float(os.environ.get("SEQ_RATE", "0")) or None
OUT = os.environ.get("SEQ_OUT", "out")
PAD = "x" * int(os.environ.get("SEQ_PAD", "0"))
MODE = os.environ.get("SEQ_MODE", "exactly_once")
POISON = {
    tuple(int(x) for x in pair.split(":"))
    for pair in os.environ.get("SEQ_POISON", "").split(",")
    if pair
}
ON_ERROR = os.environ.get("SEQ_ON_ERROR", "fail")


def make(i):
    return {"key": i % KEYS, "seq": i // KEYS + 1}


def gate(record):
    if (record["key"], record["seq"]) in POISON:
        raise ValueError(f"poison record {record}")
    return record


class Checker(KeyedProcessFunction):
    def process(self, record, ctx):
        last = ctx.state.value("last")
        previous = last.get() or {"seq": 0}
        expected = previous["seq"] + 1
        while (ctx.key, expected) in POISON:  # set aside before the checker
            expected += 1
        step = record["seq"] - expected + 1
        if step != 1 if MODE == "exactly_once" else step > 1:
            yield {"alert": f"{previous['seq']} -> {record['seq']}", "key": ctx.key}
        last.set({"seq": record["seq"], "pad": PAD} if PAD else {"seq": record["seq"]})
        yield record


RESTART = (
    RestartStrategy.fixed_delay(
        int(os.environ["SEQ_RESTARTS"]), os.environ.get("SEQ_RESTART_DELAY", "200ms")
    )
    if "SEQ_RESTARTS" in os.environ
    else None
)

job = Job(
    "seqcheck",
    restart=RESTART,
    on_error=ON_ERROR,
    dead_letter=(
        sinks.JsonLines(os.environ.get("SEQ_DEAD", os.path.join(OUT, "dead")))
        if ON_ERROR == "dead_letter"
        else None
    ),
    parallelism=2,
    checkpoint_interval=os.environ.get("SEQ_INTERVAL", "200ms"),
    checkpoint_mode=MODE,
    state_backend=os.environ.get("SEQ_BACKEND", "memory"),
)
sink = (
    sinks.SQLite(os.path.join(OUT, "out.db"), "records")
    if os.environ.get("SEQ_SINK") == "sqlite"
    else sinks.JsonLines(OUT)
)
records = job.source(sources.Generator(make, count=KEYS * N, rate=RATE)).uid("generator")
if POISON:
    records = records.map(gate).uid("gate")
(records.key_by(lambda r: r["key"]).process(Checker()).uid("checker").sink(sink).uid("committed"))
