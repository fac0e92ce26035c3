"""The real programs some tests run beside mesh (Jaeger, Prometheus, Kafka): where their
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


def cached_dir(env_var: str, name: str, version: str, marker: str) -> Path | None:
    """``$env_var`` if set, else the directory ``.ci/build-<name>`` caches under
    ``~/.cache/mesh-tools`` (or ``$MESH_TOOLS_CACHE``), for a tool that is a directory
    rather than one binary (Kafka's jars); None unless ``<dir>/<marker>`` is a file (the
    build script writes it last, so a half-built cache does not count)."""
    override = os.environ.get(env_var)
    if override:
        path = Path(override)
    else:
        cache = Path(os.environ.get("MESH_TOOLS_CACHE", Path.home() / ".cache" / "mesh-tools"))
        path = cache / f"{name}-{version}"
    return path if (path / marker).is_file() else None


def require_binary(binary: Path | None, name: str, env_var: str, what: str = "binary") -> Path:
    """``binary``, or skip the test saying how to get it — except under ``CI=true``,
    where a missing binary fails the test. ``what`` names it in the message ("jars")."""
    if binary is not None:
        return binary
    reason = (
        f"no {name} {what} (run .ci/build-{name.lower()}, which caches it under "
        f"~/.cache/mesh-tools, or set {env_var})"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)
