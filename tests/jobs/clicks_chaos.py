"""The windowed clicks job of examples/clicks.py, for the chaos tests.

The same logic — page events with their event time in ``ts`` (ms), watermarks 2 s behind
the largest timestamp, clicks only, counted per user in 10-second tumbling windows, an
exactly-once JsonLines sink — with its settings from the environment (read at import on
the client and on every node):

* CLICKS_INPUT: the glob of the event files (default: the example's data).
* CLICKS_OUT: the output directory (default: out/clicks).
* CLICKS_INTERVAL: the checkpoint interval (default: 2s).
* CLICKS_RATE: records/s over the whole source. Unset or 0: the files are read with
  ``sources.JsonLines``, as the example does (at full speed). Above 0: the files' events,
  in sorted file order, are replayed by a ``sources.Generator`` capped at that rate —
  deterministic and replayable by index — so a test can kill a node mid-stream.
* CLICKS_RESTARTS, CLICKS_RESTART_DELAY: a fixed-delay restart strategy (default:
  mesh's).
"""

import glob
import os

import orjson

from mesh import Job, RestartStrategy, WatermarkStrategy, sinks, sources, windows

INPUT = os.environ.get("CLICKS_INPUT", "examples/data/clicks/*.jsonl")
OUT = os.environ.get("CLICKS_OUT", "out/clicks")
RATE = float(os.environ.get("CLICKS_RATE", "0"))


def load(pattern):
    """Every event of the files matching ``pattern``, in sorted file order."""
    events = []
    for path in sorted(glob.glob(pattern)):
        with open(path, "rb") as lines:
            events.extend(orjson.loads(line) for line in lines if line.strip())
    return events


if RATE > 0:
    EVENTS = load(INPUT)

    def event(i):
        return EVENTS[i]

    source = sources.Generator(event, count=len(EVENTS), rate=RATE)
else:
    source = sources.JsonLines(INPUT)

job = Job(
    "clicks",
    parallelism=2,
    checkpoint_interval=os.environ.get("CLICKS_INTERVAL", "2s"),
    restart=(
        RestartStrategy.fixed_delay(
            int(os.environ["CLICKS_RESTARTS"]), os.environ.get("CLICKS_RESTART_DELAY", "100ms")
        )
        if "CLICKS_RESTARTS" in os.environ
        else None
    ),
)

events = job.source(
    source,
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
per_user.sink(sinks.JsonLines(OUT)).uid("out")
