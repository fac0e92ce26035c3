"""Kafka in, a keyed count, Kafka out: the job of the Kafka chaos tests.

Reads JSON events ``{"user": ..., "i": ...}`` from topic KC_IN (bounded: what the topic
held when the job first started), counts them per user, and writes every running count
``{"key": user, "count": n}`` to topic KC_OUT, keyed by user, with KC_SEMANTIC
("exactly_once" or "at_least_once"). A correct exactly-once run commits, for each user
with n events, the counts 1..n once each.

Settings from the environment: KC_BOOTSTRAP (required), KC_IN, KC_OUT, KC_SEMANTIC,
KC_INTERVAL (checkpoints), KC_PARALLELISM.
"""

import os

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
counts = events.key_by(lambda e: e["user"]).count().uid("count")
counts.sink(
    sinks.Kafka(
        os.environ.get("KC_OUT", "counts"),
        bootstrap=BOOTSTRAP,
        key="key",
        semantic=os.environ.get("KC_SEMANTIC", "exactly_once"),
    )
).uid("out")
