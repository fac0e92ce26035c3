"""The ``chaos`` fixture: starts ChaosRuns (tests/chaos/harness.py) and stops them after."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import ChaosRun, SeqJob


@pytest.fixture
def chaos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    runs: list[ChaosRun] = []

    def make(job: SeqJob, **kwargs: Any) -> ChaosRun:
        # ChaosRun sets SEQ_* variables for the job file; they go away after the test.
        for key in [k for k in os.environ if k.startswith("SEQ_")]:
            monkeypatch.delenv(key)
        for key, value in {**job.env(tmp_path / "out"), **kwargs.get("env", {})}.items():
            monkeypatch.setenv(key, value)
        run = ChaosRun(tmp_path, job, **kwargs)
        runs.append(run)
        run.start()
        return run

    yield make
    for run in runs:
        run.stop()
