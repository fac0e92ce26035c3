"""Shared fixtures: real daemons as subprocesses, temporary state, helpers to run jobs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.client.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent

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
def python() -> str:
    """The interpreter running the tests (daemons and CLI run under it too)."""
    return sys.executable
