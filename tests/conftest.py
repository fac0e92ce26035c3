"""Shared fixtures: real daemons as subprocesses or in-process, temporary state."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mesh.client.local_cluster import LocalCluster
from mesh.testing import InProcessCluster

ROOT = Path(__file__).resolve().parent.parent

# kafka, kafka_cluster, kafka_libs_dir: a real broker for the tests that need one.
pytest_plugins = ["tests.kafka_fixtures"]

# Hypothesis: deterministic in CI, a bit more thorough locally.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile(
        "dev", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile("ci" if os.environ.get("CI") else "dev")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[object]:
    """A factory for coordinator + node subprocesses; everything is stopped at teardown."""
    started: list[LocalCluster] = []

    def start(nodes: int = 2, slots: int = 2, **kwargs: object) -> LocalCluster:
        cluster = LocalCluster(
            nodes=nodes,
            slots=slots,
            state_dir=tmp_path / f"cluster-{len(started)}",
            log_level="debug" if os.environ.get("MESH_TEST_DEBUG") else "info",
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def inprocess_cluster(tmp_path: Path) -> Iterator[Callable[..., InProcessCluster]]:
    """A factory for clusters whose coordinator and nodes are tasks of the test's event
    loop (real sockets on 127.0.0.1); start one in an async test with
    ``async with inprocess_cluster(nodes=2, slots=2) as cluster:``, which stops it."""
    made: list[InProcessCluster] = []

    def make(nodes: int = 2, slots: int = 2, **kwargs: object) -> InProcessCluster:
        cluster = InProcessCluster(
            nodes=nodes,
            slots=slots,
            state_dir=tmp_path / f"inprocess-{len(made)}",
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(cluster)
        return cluster

    yield make
    assert [c for c in made if c.started and not c.stopped] == [], "a cluster was left running"


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (daemons and CLI run under it too)."""
    return sys.executable
