"""The real programs some tests run beside mesh (Jaeger, Prometheus): where their
binaries are, and what a test does when one is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def cached_binary(env_var: str, name: str, version: str) -> Path | None:
    """``$env_var`` if set, else the binary ``.ci/build-<name>`` caches under
    ``~/.cache/mesh-tools`` (or ``$MESH_TOOLS_CACHE``); None if that file is absent."""
    override = os.environ.get(env_var)
    if override:
        path = Path(override)
    else:
        cache = Path(os.environ.get("MESH_TOOLS_CACHE", Path.home() / ".cache" / "mesh-tools"))
        path = cache / f"{name}-{version}" / name
    return path if path.is_file() else None


def require_binary(binary: Path | None, name: str, env_var: str) -> Path:
    """``binary``, or skip the test saying how to get it — except under ``CI=true``,
    where a missing binary fails the test."""
    if binary is not None:
        return binary
    reason = (
        f"no {name} binary (run .ci/build-{name.lower()}, which caches it under "
        f"~/.cache/mesh-tools, or set {env_var})"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)
