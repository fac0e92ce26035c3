"""Clicks per user in 10-second event-time windows.

Reads page events from examples/data/clicks/*.jsonl (make them again with
examples/data/make_clicks.py). Each event carries its event time in ``ts`` (ms); some
arrive up to 1.5 s late, so the watermark trails the largest timestamp by 2 s. Every
window emits {"key": user, "window_start": ms, "window_end": ms, "count": n} once the
watermark passes its end. Run it with

    mesh run examples/clicks.py --nodes 2

and the counts land in out/clicks/part-*.jsonl, exactly once even if a node dies
(checkpoints every 2 s).
"""

from mesh import Job, WatermarkStrategy, sinks, sources, windows

job = Job("clicks", parallelism=2, checkpoint_interval="2s")

events = job.source(
    sources.JsonLines("examples/data/clicks/*.jsonl"),
    watermarks=WatermarkStrategy.bounded(
        max_delay="2s", timestamp=lambda e: e["ts"], idle_timeout="10s"
    ),
).uid("clicks")
per_user = (
    events.filter(lambda e: e["kind"] == "click")
    .key_by(lambda e: e["user"])
    .window(windows.Tumbling("10s"))
    .count()
    .uid("clicks-per-user")
)
per_user.sink(sinks.JsonLines("out/clicks")).uid("out")
