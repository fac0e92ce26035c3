"""Fixtures for tests against a real Kafka (KRaft) on 127.0.0.1 (a pytest plugin, loaded
by tests/conftest.py, so every test directory has them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka import Kafka, kafka_libs, running_kafka
from tests.tools import require_binary


@pytest.fixture
def kafka_libs_dir() -> Path:
    """The broker's jars; without them the test is skipped, except under ``CI=true``,
    where it fails."""
    return require_binary(kafka_libs(), "Kafka", "MESH_KAFKA", "jars")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """One Kafka node (broker + controller) shared by the module's tests (each uses topics
    and transactional ids of its own), stopped after the module's last test."""
    libs = require_binary(kafka_libs(), "Kafka", "MESH_KAFKA", "jars")
    with running_kafka(tmp_path_factory.mktemp("kafka"), libs) as running:
        yield running


@pytest.fixture
def kafka_cluster(tmp_path: Path, kafka_libs_dir: Path) -> Iterator[Kafka]:
    """Three Kafka nodes, each a broker and a KRaft controller, stopped at teardown."""
    with running_kafka(tmp_path / "kafka", kafka_libs_dir, brokers=3) as running:
        yield running
