"""Kafka in, a keyed count, Kafka out: the job of the Kafka chaos tests.

Reads JSON events ``{"user": ..., "i": ...}`` from topic KC_IN (bounded: what the topic
held when the job first started), counts them per user, and writes every running count
``{"key": user, "count": n}`` to topic KC_OUT, keyed by user, with KC_SEMANTIC
("exactly_once" or "at_least_once"). A correct exactly-once run commits, for each user
with n events, the counts 1..n once each.

Settings from the environment: KC_BOOTSTRAP (required), KC_IN, KC_OUT, KC_SEMANTIC,
KC_INTERVAL (checkpoints), KC_PARALLELISM, KC_TXN_TIMEOUT_MS (the sink's
transaction_timeout_ms), and KC_RATE: at most this many events per
second over the source subtasks (default: no limit), so that a test's kill lands while
the job runs however fast the machine.
"""

import os
import time

from mesh import Job, ProcessFunction, RestartStrategy, sinks, sources

BOOTSTRAP = os.environ["KC_BOOTSTRAP"]

job = Job(
    "kafka-count",
    parallelism=int(os.environ.get("KC_PARALLELISM", "3")),
    checkpoint_interval=os.environ.get("KC_INTERVAL", "500ms"),
    restart=RestartStrategy.fixed_delay(20, "200ms"),
)
events = job.source(
    sources.Kafka(os.environ.get("KC_IN", "events"), bootstrap=BOOTSTRAP, stop_at="latest")
).uid("events")
RATE = float(os.environ.get("KC_RATE", "0"))


class Pace(ProcessFunction):
    """Holds each source subtask to its share of KC_RATE: every 100 events, it sleeps
    until 100 events' worth of time passed since the last 100 (a pause, such as a
    restart, is not made up for)."""

    def open(self, ctx: object) -> None:
        self.per_100_s = 100 * int(os.environ.get("KC_PARALLELISM", "3")) / RATE
        self.seen = 0
        self.last = time.monotonic()

    def process(self, event: dict, ctx: object) -> list[dict]:
        self.seen += 1
        if self.seen % 100 == 0:
            now = time.monotonic()
            due = self.last + self.per_100_s
            if due > now:
                time.sleep(due - now)
                now = due
            self.last = now
        return [event]


if RATE > 0:
    events = events.process(Pace()).uid("pace")
counts = events.key_by(lambda e: e["user"]).count().uid("count")
counts.sink(
    sinks.Kafka(
        os.environ.get("KC_OUT", "counts"),
        bootstrap=BOOTSTRAP,
        key="key",
        semantic=os.environ.get("KC_SEMANTIC", "exactly_once"),
        transaction_timeout_ms=int(os.environ.get("KC_TXN_TIMEOUT_MS", "60000")),
    )
).uid("out")
