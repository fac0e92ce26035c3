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

from mesh import Job, RestartStrategy, sinks, sources

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
if RATE > 0:
    PER_SUBTASK = RATE / int(os.environ.get("KC_PARALLELISM", "3"))
    _paced = {"began": 0.0, "seen": 0}

    def pace(event: dict) -> dict:
        """Holds this subtask to its share of KC_RATE (sleeping every 100 events)."""
        if _paced["seen"] == 0:
            _paced["began"] = time.monotonic()
        _paced["seen"] += 1
        if _paced["seen"] % 100 == 0:
            ahead = _paced["began"] + _paced["seen"] / PER_SUBTASK - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        return event

    events = events.map(pace).uid("pace")
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
