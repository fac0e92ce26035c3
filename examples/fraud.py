"""Fraud detection with keyed state and event-time timers.

Reads card transactions from examples/data/transactions/*.jsonl (make them again with
examples/data/make_transactions.py). A classic fraud pattern is a tiny amount (a thief
checking that a stolen card works) soon followed by a large one. Per user, ``Fraud``
remembers a tiny amount (below 1) for 60 s of event time — a timer forgets it — and a
large amount (above 500) in that time emits
{"user": user, "alert": "small-then-large", "ts": ms of the large one, "small_ts": ms of
the tiny one}. Transactions arrive up to 5 s out of order, so the watermark trails the
largest timestamp by 5 s. Run it with

    mesh run examples/fraud.py --nodes 2

and the alerts land in out/fraud/part-*.jsonl, exactly once even if a node dies
(checkpoints every 2 s, and the state and timers are part of them).
"""

from mesh import Job, KeyedProcessFunction, WatermarkStrategy, sinks, sources


class Fraud(KeyedProcessFunction):
    """A tiny amount, then a large one within 60 s (event time), is an alert."""

    def process(self, record, ctx):
        last = ctx.state.value("last_small")
        if record["amount"] < 1 and last.get() is None:
            last.set(record["ts"])
            ctx.timers.event_time(record["ts"] + 60_000)
        elif record["amount"] > 500 and last.get() is not None:
            yield {
                "user": ctx.key,
                "alert": "small-then-large",
                "ts": ctx.timestamp,
                "small_ts": last.get(),
            }

    def on_timer(self, ts, ctx):
        ctx.state.value("last_small").clear()


job = Job("fraud", parallelism=2, checkpoint_interval="2s")

# One reader keeps the transactions in time order (each file covers the 200 s after the
# one before): event time then moves with the data alone. The detectors run in parallel.
transactions = (
    job.source(
        sources.JsonLines("examples/data/transactions/*.jsonl"),
        watermarks=WatermarkStrategy.bounded("5s", timestamp=lambda t: t["ts"]),
    )
    .uid("transactions")
    .set_parallelism(1)
)
alerts = transactions.key_by(lambda t: t["user"]).process(Fraud()).uid("fraud")
alerts.sink(sinks.JsonLines("out/fraud")).uid("out")
