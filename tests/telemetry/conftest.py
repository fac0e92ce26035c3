"""Fixtures for tests that export traces to a real Jaeger."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jaeger import Jaeger, jaeger_binary, running_jaeger


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    """A Jaeger on 127.0.0.1 with in-memory storage, stopped at teardown. Without the
    binary the test is skipped, except under ``CI=true``, where it fails."""
    binary = jaeger_binary()
    if binary is None:
        reason = (
            "no Jaeger binary (run .ci/build-jaeger, which caches it under "
            "~/.cache/mesh-tools, or set MESH_JAEGER)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    with running_jaeger(tmp_path / "jaeger", binary) as running:
        yield running


@pytest.fixture
def prometheus_binary_path() -> Path:
    """The Prometheus binary; without it the test is skipped, except under ``CI=true``,
    where it fails."""
    from tests.prometheus import prometheus_binary

    binary = prometheus_binary()
    if binary is None:
        reason = (
            "no Prometheus binary (run .ci/build-prometheus, which caches it under "
            "~/.cache/mesh-tools, or set MESH_PROMETHEUS)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return binary
