"""Sessionization: each user's bursts of activity, in event-time session windows.

Reads page events from examples/data/clicks/*.jsonl (make them again with
examples/data/make_clicks.py), clicks and views alike. A user's session is a run of
events at most 3 s apart (these synthetic users are busy: about one event a second each),
so it ends 3 s after its last event; sessions merge as late events fill their gaps. Each
session emits {"key": user, "window_start": ms, "window_end": ms, "value": {"events": n,
"pages": [distinct pages, sorted], "first": ms, "last": ms}} once the watermark passes
its end (``window_end`` is the last event's time plus the gap). Events arrive up to
1.5 s late, so the watermark trails the largest timestamp by 2 s. Run it with

    mesh run examples/sessions.py --nodes 2

and the sessions land in out/sessions/part-*.jsonl, exactly once even if a node dies
(checkpoints every 2 s).
"""

from mesh import Aggregate, Job, WatermarkStrategy, sinks, sources, windows


class SessionStats(Aggregate):
    """Events, distinct pages and first/last event time of a session."""

    def create(self):
        return {"events": 0, "pages": [], "first": None, "last": None}

    def add(self, acc, event):
        return self.merge(
            acc, {"events": 1, "pages": [event["page"]], "first": event["ts"], "last": event["ts"]}
        )

    def merge(self, a, b):
        if not a["events"]:
            return b
        if not b["events"]:
            return a
        return {
            "events": a["events"] + b["events"],
            "pages": sorted({*a["pages"], *b["pages"]}),
            "first": min(a["first"], b["first"]),
            "last": max(a["last"], b["last"]),
        }


job = Job("sessions", parallelism=2, checkpoint_interval="2s")

events = job.source(
    sources.JsonLines("examples/data/clicks/*.jsonl"),
    watermarks=WatermarkStrategy.bounded(
        max_delay="2s", timestamp=lambda e: e["ts"], idle_timeout="10s"
    ),
).uid("clicks")
sessions = (
    events.key_by(lambda e: e["user"])
    .window(windows.Session("3s"))
    .aggregate(SessionStats())
    .uid("sessions-per-user")
)
sessions.sink(sinks.JsonLines("out/sessions")).uid("out")
