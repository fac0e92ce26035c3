"""Fixtures for tests that read telemetry back from a real Jaeger or Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jaeger import Jaeger, jaeger_binary, running_jaeger
from tests.prometheus import prometheus_binary
from tests.tools import require_binary


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    """A Jaeger on 127.0.0.1 with in-memory storage, stopped at teardown. Without the
    binary the test is skipped, except under ``CI=true``, where it fails."""
    binary = require_binary(jaeger_binary(), "Jaeger", "MESH_JAEGER")
    with running_jaeger(tmp_path / "jaeger", binary) as running:
        yield running


@pytest.fixture
def prometheus_binary_path() -> Path:
    """The Prometheus binary; without it the test is skipped, except under ``CI=true``,
    where it fails."""
    return require_binary(prometheus_binary(), "Prometheus", "MESH_PROMETHEUS")
