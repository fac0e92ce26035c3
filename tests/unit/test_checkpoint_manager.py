"""The checkpoint coordinator of one job (mesh/coordinator/checkpoints.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.coordinator.checkpoints import (
    CheckpointManager,
    JobView,
    SavepointRequest,
)
from mesh.coordinator.restore import check_restore_point
from mesh.coordinator.store import CheckpointStore
from mesh.coordinator.trigger import CheckpointPolicy
from mesh.errors import CheckpointError
from mesh.protocol.messages import (
    AckCheckpoint,
    CheckpointDone,
    DeclineCheckpoint,
    SnapshotFile,
    TriggerCheckpoint,
)
from mesh.state.metadata import (
    METADATA_FILE,
    CheckpointMetadata,
    OperatorFiles,
    load_metadata,
)
from mesh.time.clock import ManualClock

JOB_ID = "feedc0de12345678"
# Task 0 is a source "src" with parallelism 2 (keyed state), task 1 a sink "out".
SUBTASKS = ["0.0", "0.1", "1.0"]
PLACEMENT = {"0.0": "node-a", "0.1": "node-b", "1.0": "node-a"}
NODES = ["node-a", "node-b"]
START_MS = 1_000_000


class Harness:
    """A manager wired to a real store, a manual clock and a message recorder."""

    def __init__(self, tmp_path: Path, policy: CheckpointPolicy) -> None:
        self.tmp_path = tmp_path
        self.clock = ManualClock(START_MS)
        self.store = CheckpointStore(tmp_path / "coordinator.db")
        self.sent: list[tuple[str, Any]] = []
        self.failures: list[str] = []
        self.root = tmp_path / "checkpoints" / JOB_ID
        self.job = JobView(
            job_id=JOB_ID,
            job_name="demo",
            subtasks=list(SUBTASKS),
            placement=dict(PLACEMENT),
            nodes=list(NODES),
            operator_parallelism={"src": (2, 128), "out": (1, 128)},
        )
        self.manager = self._manager(policy)

    def _manager(self, policy: CheckpointPolicy, first_id: int = 1) -> CheckpointManager:
        manager = CheckpointManager(
            job=self.job,
            attempt=3,
            policy=policy,
            root=self.root,
            store=self.store,
            clock=self.clock,
            send=lambda node, msg: self.sent.append((node, msg)),
            first_id=first_id,
        )
        manager.on_too_many_failures = self.failures.append
        return manager

    def all_running(self) -> None:
        for subtask in SUBTASKS:
            self.manager.on_subtask_state(subtask, "RUNNING")

    def take(self) -> list[tuple[str, Any]]:
        sent, self.sent = self.sent, []
        return sent

    def trigger(self) -> TriggerCheckpoint:
        """Advance to the next due time, tick, and return the trigger sent to node-a."""
        self.take()  # earlier messages (checkpoint done) were checked or are not of interest
        policy = self.manager.policy
        self.clock.advance(max(policy.interval_ms or 0, policy.min_pause_ms))
        self.manager.tick()
        sent = self.take()
        assert [node for node, _ in sent] == NODES
        msg = sent[0][1]
        assert isinstance(msg, TriggerCheckpoint)
        return msg

    def files_for(self, directory: Path, subtask: str) -> list[SnapshotFile]:
        """Write real snapshot files for ``subtask`` (the sink has none)."""
        if subtask == "1.0":
            return []
        index = int(subtask.split(".")[1])
        data = f"state of {subtask}".encode() * (index + 1)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"src-{index}.db"
        (directory / name).write_bytes(data)
        groups = (0, 64) if index == 0 else (64, 128)
        return [
            SnapshotFile(
                uid="src",
                subtask=index,
                file=name,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                key_groups=groups,
            )
        ]

    def ack(
        self, checkpoint_id: int, subtask: str, directory: str, alignment_ms: float = 0.0
    ) -> AckCheckpoint:
        msg = AckCheckpoint(
            job_id=JOB_ID,
            attempt=3,
            checkpoint_id=checkpoint_id,
            subtask=subtask,
            files=self.files_for(Path(directory), subtask),
            duration_ms=1.5,
            alignment_ms=alignment_ms,
        )
        self.manager.on_ack(msg)
        return msg

    def ack_all(self, trigger: TriggerCheckpoint) -> None:
        for subtask in SUBTASKS:
            self.ack(trigger.checkpoint_id, subtask, trigger.directory)

    def decline(self, checkpoint_id: int, subtask: str, reason: str) -> None:
        self.manager.on_decline(
            DeclineCheckpoint(
                job_id=JOB_ID,
                attempt=3,
                checkpoint_id=checkpoint_id,
                subtask=subtask,
                reason=reason,
            )
        )

    def done_messages(self, sent: list[tuple[str, Any]]) -> list[tuple[str, CheckpointDone]]:
        return [(node, msg) for node, msg in sent if isinstance(msg, CheckpointDone)]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    harnesses: list[Harness] = []

    def build(**policy: Any) -> Harness:
        settings: dict[str, Any] = {"interval_ms": 1000, "timeout_ms": 5000}
        settings.update(policy)
        harness = Harness(tmp_path, CheckpointPolicy(**settings))
        harnesses.append(harness)
        return harness

    yield build
    for harness in harnesses:
        harness.store.close()


# -- triggering ------------------------------------------------------------------------------


def test_tick_triggers_only_when_due_and_every_subtask_runs(make: Any) -> None:
    h = make()
    h.all_running()
    h.clock.advance(999)
    h.manager.tick()
    assert h.take() == []
    h.clock.advance(1)
    h.manager.tick()
    sent = h.take()
    expected_dir = str(h.root / "chk-1")
    assert sent == [
        (
            node,
            TriggerCheckpoint(
                job_id=JOB_ID, attempt=3, checkpoint_id=1, kind="checkpoint", directory=expected_dir
            ),
        )
        for node in NODES
    ]
    assert h.manager.pending is not None and h.manager.pending.checkpoint_id == 1


def test_tick_does_not_trigger_unless_every_subtask_is_running_or_ending(make: Any) -> None:
    h = make()
    h.clock.advance(5000)
    h.manager.tick()  # no states reported yet
    assert h.take() == []
    h.manager.on_subtask_state("0.0", "RUNNING")
    h.manager.on_subtask_state("0.1", "DEPLOYING")
    h.manager.on_subtask_state("1.0", "RUNNING")
    h.manager.tick()
    assert h.take() == []
    h.manager.on_subtask_state("0.1", "ENDING")
    h.manager.tick()
    sent = h.take()
    assert [type(msg) for _, msg in sent] == [TriggerCheckpoint, TriggerCheckpoint]


def test_no_second_trigger_while_one_is_in_flight(make: Any) -> None:
    h = make(timeout_ms=60_000)
    h.all_running()
    h.trigger()
    for _ in range(5):
        h.clock.advance(1000)
        h.manager.tick()
    assert h.take() == []


def test_no_periodic_checkpoint_without_interval(make: Any) -> None:
    h = make(interval_ms=None)
    h.all_running()
    h.clock.advance(10**9)
    h.manager.tick()
    assert h.take() == []


def test_first_id_continues_a_restored_job(make: Any) -> None:
    h = make()
    h.manager = h._manager(h.manager.policy, first_id=42)
    h.all_running()
    trigger = h.trigger()
    assert trigger.checkpoint_id == 42
    assert trigger.directory == str(h.root / "chk-42")


# -- completion -------------------------------------------------------------------------------


def test_acks_from_every_subtask_complete_the_checkpoint(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.clock.advance(250)
    h.ack(1, "0.1", trigger.directory)
    h.ack(1, "1.0", trigger.directory)
    assert h.take() == []
    assert not (Path(trigger.directory) / METADATA_FILE).exists()
    h.ack(1, "0.0", trigger.directory)

    directory = Path(trigger.directory)
    metadata = load_metadata(directory, verify=False)
    assert load_metadata(directory) == metadata  # the listed files match what was written
    assert metadata.job_id == JOB_ID
    assert metadata.job_name == "demo"
    assert metadata.checkpoint_id == 1
    assert metadata.kind == "checkpoint"
    assert metadata.created_ms == START_MS + 1000 + 250
    assert list(metadata.operators) == ["src"]
    src = metadata.operators["src"]
    assert (src.parallelism, src.max_parallelism) == (2, 128)
    assert [(f.subtask, f.file, f.key_groups) for f in src.files] == [
        (0, "src-0.db", (0, 64)),
        (1, "src-1.db", (64, 128)),
    ]
    assert [f.size for f in src.files] == [
        (directory / "src-0.db").stat().st_size,
        (directory / "src-1.db").stat().st_size,
    ]

    assert h.take() == [
        (node, CheckpointDone(job_id=JOB_ID, attempt=3, checkpoint_id=1, completed=True))
        for node in NODES
    ]
    [row] = h.store.history(JOB_ID)
    assert row.state == "COMPLETED"
    assert row.checkpoint_id == 1
    assert row.kind == "checkpoint"
    assert row.path == trigger.directory
    assert row.triggered_ms == START_MS + 1000
    assert row.ended_ms == START_MS + 1250
    assert row.duration_ms == 250
    assert row.size_bytes == metadata.size > 0
    assert row.reason is None
    assert h.manager.pending is None
    assert h.manager.summary()["completed"] == 1
    assert h.manager.summary()["latest"]["checkpoint_id"] == 1


def test_the_latest_alignment_time_is_the_longest_of_its_subtasks(make: Any) -> None:
    h = make()
    h.all_running()
    assert h.manager.latest_alignment_ms is None
    trigger = h.trigger()
    for subtask, alignment_ms in zip(SUBTASKS, (0.0, 12.5, 40.0), strict=True):
        h.ack(1, subtask, trigger.directory, alignment_ms)
    assert h.manager.latest_alignment_ms == 40.0
    trigger = h.trigger()
    for subtask in SUBTASKS:
        h.ack(trigger.checkpoint_id, subtask, trigger.directory, 3.0)
    assert h.manager.latest_alignment_ms == 3.0


def test_next_checkpoint_after_a_completion(make: Any) -> None:
    h = make()
    h.all_running()
    h.ack_all(h.trigger())
    h.take()
    second = h.trigger()
    assert second.checkpoint_id == 2
    assert second.directory == str(h.root / "chk-2")


def test_duplicate_unknown_and_late_acks_change_nothing(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    first = h.ack(1, "0.0", trigger.directory)
    pending = h.manager.pending
    assert pending is not None
    h.manager.on_ack(first)  # duplicate
    h.manager.on_ack(
        AckCheckpoint(
            job_id=JOB_ID, attempt=3, checkpoint_id=1, subtask="9.9", files=[], duration_ms=0
        )
    )
    h.manager.on_ack(  # an ack for a checkpoint that is not in flight
        AckCheckpoint(
            job_id=JOB_ID, attempt=3, checkpoint_id=7, subtask="0.1", files=[], duration_ms=0
        )
    )
    assert h.manager.pending is pending
    assert pending.acks == {"0.0": first}
    assert pending.missing == ["0.1", "1.0"]
    assert h.take() == []
    assert h.store.history(JOB_ID) == []
    assert not (Path(trigger.directory) / METADATA_FILE).exists()
    # The real acks still complete it.
    h.ack(1, "0.1", trigger.directory)
    h.ack(1, "1.0", trigger.directory)
    assert [row.state for row in h.store.history(JOB_ID)] == ["COMPLETED"]


def test_acks_after_completion_are_ignored(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.ack_all(trigger)
    h.take()
    h.ack(1, "0.0", trigger.directory)
    assert h.take() == []
    assert [row.state for row in h.store.history(JOB_ID)] == ["COMPLETED"]


def test_retention_deletes_old_checkpoints_and_marks_them_discarded(make: Any) -> None:
    h = make(retained=2)
    h.all_running()
    directories = []
    for _ in range(4):
        trigger = h.trigger()
        h.ack_all(trigger)
        directories.append(Path(trigger.directory))
    assert [d.exists() for d in directories] == [False, False, True, True]
    assert [(r.checkpoint_id, r.state) for r in h.store.history(JOB_ID)] == [
        (1, "DISCARDED"),
        (2, "DISCARDED"),
        (3, "COMPLETED"),
        (4, "COMPLETED"),
    ]
    assert [r.checkpoint_id for r in h.manager.completed] == [3, 4]
    load_metadata(directories[3])


def test_retention_counts_checkpoints_of_an_earlier_manager(make: Any) -> None:
    h = make(retained=2)
    h.all_running()
    first = h.trigger()
    h.ack_all(first)
    second = h.trigger()
    h.ack_all(second)
    # The coordinator restarts: a new manager over the same store and directories.
    h.manager = h._manager(h.manager.policy, first_id=3)
    h.all_running()
    assert [r.checkpoint_id for r in h.manager.completed] == [1, 2]
    third = h.trigger()
    assert third.checkpoint_id == 3
    h.ack_all(third)
    assert not Path(first.directory).exists()
    assert Path(second.directory, METADATA_FILE).exists()
    assert [(r.checkpoint_id, r.state) for r in h.store.history(JOB_ID)] == [
        (1, "DISCARDED"),
        (2, "COMPLETED"),
        (3, "COMPLETED"),
    ]


def test_metadata_that_cannot_be_written_aborts(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.ack(1, "0.0", trigger.directory)
    h.ack(1, "0.1", trigger.directory)
    (Path(trigger.directory) / METADATA_FILE).mkdir()  # the rename onto it fails
    h.ack(1, "1.0", trigger.directory)
    assert [msg.completed for _, msg in h.done_messages(h.take())] == [False, False]
    [row] = h.store.history(JOB_ID)
    assert row.state == "FAILED"
    assert row.reason is not None and row.reason.startswith(
        f"cannot write {trigger.directory}/{METADATA_FILE}"
    )
    assert h.manager.pending is None
    assert h.manager.completed == []


# -- aborting ---------------------------------------------------------------------------------


def test_decline_aborts_the_checkpoint(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.ack(1, "0.0", trigger.directory)
    assert Path(trigger.directory).exists()
    h.clock.advance(40)
    h.decline(1, "0.1", "disk full")
    assert h.take() == [
        (node, CheckpointDone(job_id=JOB_ID, attempt=3, checkpoint_id=1, completed=False))
        for node in NODES
    ]
    [row] = h.store.history(JOB_ID)
    assert row.state == "FAILED"
    assert row.reason == "declined by 0.1: disk full"
    assert row.duration_ms == 40
    assert row.size_bytes == 0
    assert not Path(trigger.directory).exists()  # partial files are deleted
    assert h.manager.pending is None
    assert h.manager.last_failure == "checkpoint 1: declined by 0.1: disk full"
    assert h.failures == []
    # A late ack of the aborted checkpoint changes nothing.
    h.ack(1, "0.1", trigger.directory)
    h.ack(1, "1.0", trigger.directory)
    assert h.take() == []
    assert not (Path(trigger.directory) / METADATA_FILE).exists()


def test_decline_of_another_checkpoint_is_ignored(make: Any) -> None:
    h = make()
    h.all_running()
    h.trigger()
    h.decline(99, "0.1", "old news")
    assert h.take() == []
    assert h.manager.pending is not None


def test_timeout_aborts_the_checkpoint(make: Any) -> None:
    h = make(interval_ms=1000, timeout_ms=5000, min_pause_ms=2000)
    h.all_running()
    trigger = h.trigger()
    h.clock.advance(4999)
    h.manager.tick()
    assert h.take() == []
    h.clock.advance(1)
    h.manager.tick()
    assert h.take() == [
        (node, CheckpointDone(job_id=JOB_ID, attempt=3, checkpoint_id=1, completed=False))
        for node in NODES
    ]
    [row] = h.store.history(JOB_ID)
    assert (row.state, row.reason) == ("FAILED", "expired after 5000 ms")
    # Acks arriving after the expiry do not complete it.
    h.ack_all(trigger)
    assert h.take() == []
    # The next one waits for the min pause after the abort.
    h.clock.advance(1999)
    h.manager.tick()
    assert h.take() == []
    h.clock.advance(1)
    h.manager.tick()
    [(_, second), _] = h.take()
    assert second.checkpoint_id == 2


def test_too_many_consecutive_failures_call_the_callback(make: Any) -> None:
    h = make(tolerable_failures=1)
    h.all_running()
    h.decline(h.trigger().checkpoint_id, "0.0", "boom")
    assert h.failures == []
    h.decline(h.trigger().checkpoint_id, "0.0", "bang")
    assert len(h.failures) == 1
    assert "2 checkpoints in a row failed" in h.failures[0]
    assert "declined by 0.0: bang" in h.failures[0]


def test_a_completion_resets_the_failure_count(make: Any) -> None:
    h = make(tolerable_failures=1)
    h.all_running()
    h.decline(h.trigger().checkpoint_id, "0.0", "boom")
    h.ack_all(h.trigger())
    h.decline(h.trigger().checkpoint_id, "0.0", "boom")
    assert h.failures == []
    h.decline(h.trigger().checkpoint_id, "0.0", "boom")
    assert len(h.failures) == 1


# -- subtasks changing state ------------------------------------------------------------------


def test_subtask_ending_before_its_ack_is_triggered_directly(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.manager.on_subtask_state("0.1", "ENDING")
    assert h.take() == [
        (
            "node-b",
            TriggerCheckpoint(
                job_id=JOB_ID,
                attempt=3,
                checkpoint_id=1,
                kind="checkpoint",
                directory=trigger.directory,
                subtasks=["0.1"],
            ),
        )
    ]
    # One that already acknowledged is not triggered again.
    h.ack(1, "0.0", trigger.directory)
    h.manager.on_subtask_state("0.0", "ENDING")
    assert h.take() == []
    h.ack(1, "0.1", trigger.directory)
    h.ack(1, "1.0", trigger.directory)
    assert [row.state for row in h.store.history(JOB_ID)] == ["COMPLETED"]


def test_subtask_finishing_before_its_ack_aborts(make: Any) -> None:
    h = make()
    h.all_running()
    h.trigger()
    h.manager.on_subtask_state("1.0", "FINISHED")
    sent = h.take()
    assert [msg.completed for _, msg in h.done_messages(sent)] == [False, False]
    [row] = h.store.history(JOB_ID)
    assert row.state == "FAILED"
    assert row.reason == "subtask 1.0 stopped (FINISHED) before acknowledging"


def test_subtask_finishing_after_its_ack_does_not_abort(make: Any) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.ack(1, "1.0", trigger.directory)
    h.manager.on_subtask_state("1.0", "FINISHED")
    assert h.take() == []
    assert h.manager.pending is not None
    h.ack(1, "0.0", trigger.directory)
    h.ack(1, "0.1", trigger.directory)
    assert [row.state for row in h.store.history(JOB_ID)] == ["COMPLETED"]


# -- savepoints -------------------------------------------------------------------------------


def test_savepoint_is_written_into_the_given_directory(make: Any, tmp_path: Path) -> None:
    h = make(interval_ms=None, retained=1)
    h.all_running()
    results: list[tuple[str | None, int, str | None]] = []
    target = tmp_path / "savepoints"
    h.manager.take_savepoint(
        SavepointRequest(directory=target, done=lambda *args: results.append(args))
    )
    sent = h.take()
    expected_dir = str(target / f"savepoint-{JOB_ID[:8]}-1")
    assert sent == [
        (
            node,
            TriggerCheckpoint(
                job_id=JOB_ID, attempt=3, checkpoint_id=1, kind="savepoint", directory=expected_dir
            ),
        )
        for node in NODES
    ]
    assert results == []
    h.ack_all(sent[0][1])
    assert results == [(expected_dir, 1, None)]
    metadata = load_metadata(Path(expected_dir))
    assert metadata.kind == "savepoint"
    assert [(r.kind, r.state) for r in h.store.history(JOB_ID)] == [("savepoint", "COMPLETED")]
    assert [msg.completed for _, msg in h.done_messages(h.take())] == [True, True]


def test_savepoint_waits_for_the_checkpoint_in_flight(make: Any, tmp_path: Path) -> None:
    h = make()
    h.all_running()
    checkpoint = h.trigger()
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    assert h.take() == []
    h.ack_all(checkpoint)
    sent = h.take()
    triggers = [msg for _, msg in sent if isinstance(msg, TriggerCheckpoint)]
    assert [(t.checkpoint_id, t.kind) for t in triggers] == [(2, "savepoint"), (2, "savepoint")]
    h.ack_all(triggers[0])
    assert results == [(str(tmp_path / "sp" / f"savepoint-{JOB_ID[:8]}-2"), 2, None)]


def test_savepoints_are_not_deleted_by_retention(make: Any, tmp_path: Path) -> None:
    h = make(retained=1)
    h.all_running()
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    h.ack_all(h.take()[0][1])
    for _ in range(2):
        h.ack_all(h.trigger())
    savepoint = results[0][0]
    assert savepoint is not None and Path(savepoint, METADATA_FILE).exists()
    assert [(r.kind, r.state) for r in h.store.history(JOB_ID)] == [
        ("savepoint", "COMPLETED"),
        ("checkpoint", "DISCARDED"),
        ("checkpoint", "COMPLETED"),
    ]


def test_failed_savepoint_reports_the_reason(make: Any, tmp_path: Path) -> None:
    h = make(interval_ms=None, tolerable_failures=0)
    h.all_running()
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    trigger = h.take()[0][1]
    h.decline(trigger.checkpoint_id, "0.1", "no space")
    assert results == [(None, 1, "declined by 0.1: no space")]
    [row] = h.store.history(JOB_ID)
    assert (row.kind, row.state, row.reason) == ("savepoint", "FAILED", "declined by 0.1: no space")
    # A failed savepoint is not a checkpoint failure.
    assert h.failures == []
    assert h.manager.timer.consecutive_failures == 0
    assert not h.manager.timer.in_flight


def test_savepoint_waits_for_subtasks_that_are_still_starting(make: Any, tmp_path: Path) -> None:
    # A job is RUNNING once its nodes deployed it, before every subtask reports running:
    # a savepoint asked for in between is taken as soon as they all run.
    h = make(interval_ms=None)
    h.manager.on_subtask_state("0.0", "RUNNING")
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    h.manager.on_subtask_state("0.1", "DEPLOYED")
    h.manager.tick()
    assert h.take() == [] and results == []
    h.manager.on_subtask_state("0.1", "RUNNING")
    assert h.take() == []
    h.manager.on_subtask_state("1.0", "RUNNING")
    triggers = [msg for _, msg in h.take() if isinstance(msg, TriggerCheckpoint)]
    assert [(t.checkpoint_id, t.kind) for t in triggers] == [(1, "savepoint"), (1, "savepoint")]
    h.ack_all(triggers[0])
    assert results == [(str(tmp_path / "sp" / f"savepoint-{JOB_ID[:8]}-1"), 1, None)]


def test_savepoint_refused_once_a_subtask_stopped(make: Any, tmp_path: Path) -> None:
    h = make()
    h.all_running()
    h.manager.on_subtask_state("1.0", "FINISHED")
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    assert results == [
        (
            None,
            0,
            "the job is ending: subtask 1.0 is FINISHED, "
            "and a savepoint needs every subtask running",
        )
    ]
    assert h.take() == []


def test_waiting_savepoint_fails_when_a_subtask_stops_before_all_run(
    make: Any, tmp_path: Path
) -> None:
    h = make()
    h.manager.on_subtask_state("0.0", "RUNNING")
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    assert results == []
    h.manager.on_subtask_state("0.1", "FINISHED")
    [(path, _, error)] = results
    assert path is None and error is not None and "subtask 0.1 is FINISHED" in error
    h.manager.on_subtask_state("1.0", "RUNNING")
    h.manager.tick()
    assert [m for _, m in h.take() if isinstance(m, TriggerCheckpoint)] == []


def test_waiting_savepoint_fails_when_the_attempt_ends(make: Any, tmp_path: Path) -> None:
    h = make()
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    h.manager.shutdown("restarting")
    assert results == [(None, 0, "the job is restarting")]
    h.all_running()
    assert h.take() == []


# -- restore points ---------------------------------------------------------------------------


def _metadata(**operators: OperatorFiles) -> CheckpointMetadata:
    return CheckpointMetadata(
        job_id=JOB_ID, job_name="demo", checkpoint_id=3, kind="checkpoint", created_ms=0,
        operators=dict(operators),
    )  # fmt: skip


def _keyed(max_parallelism: int) -> OperatorFiles:
    return OperatorFiles(
        parallelism=1,
        max_parallelism=max_parallelism,
        files=(
            SnapshotFile(
                uid="count", subtask=0, file="a.db", size=1, sha256="x", key_groups=(0, 128)
            ),
        ),
    )


def test_check_restore_point_accepts_a_matching_job() -> None:
    plain = OperatorFiles(parallelism=2, max_parallelism=64, files=())
    check_restore_point(_metadata(count=_keyed(128), src=plain), {"count": 128, "src": 32, "x": 1})


def test_check_restore_point_refuses_unknown_uids() -> None:
    with pytest.raises(CheckpointError, match=r"'gone'.*uid"):
        check_restore_point(_metadata(gone=_keyed(128), count=_keyed(128)), {"count": 128})


def test_check_restore_point_refuses_a_max_parallelism_mismatch() -> None:
    with pytest.raises(CheckpointError, match=r"'count'.*128 key groups.*max_parallelism 256"):
        check_restore_point(_metadata(count=_keyed(128)), {"count": 256})


# -- shutdown (the job ends) -----------------------------------------------------------------


def test_shutdown_aborts_the_checkpoint_in_flight_without_counting_a_failure(
    make: Any, tmp_path: Path
) -> None:
    h = make(tolerable_failures=0)
    h.all_running()
    trigger = h.trigger()
    h.ack(trigger.checkpoint_id, "0.0", trigger.directory)
    h.manager.shutdown("finishing")
    [row] = h.store.history(JOB_ID)
    assert (row.state, row.reason) == ("ABORTED", "the job is finishing")
    assert not Path(trigger.directory).exists()
    assert [msg.completed for _, msg in h.done_messages(h.take())] == [False, False]
    assert h.failures == []
    assert h.manager.last_failure is None
    assert h.manager.timer.consecutive_failures == 0
    # Nothing more is triggered, and acks for the aborted checkpoint are ignored.
    h.clock.advance(10_000)
    h.manager.tick()
    h.ack(trigger.checkpoint_id, "0.1", trigger.directory)
    assert h.take() == []
    assert h.manager.pending is None


def test_shutdown_fails_waiting_savepoints_and_refuses_new_ones(make: Any, tmp_path: Path) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    assert results == []  # queued behind the checkpoint in flight
    h.manager.shutdown("cancelling")
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    assert results == [(None, 0, "the job is cancelling")] * 2
    assert [r.state for r in h.store.history(JOB_ID)] == ["ABORTED"]
    assert not any(isinstance(msg, TriggerCheckpoint) for _, msg in h.take())
    assert trigger.checkpoint_id == 1


# -- finish (a bounded job's input ended) ----------------------------------------------------


def test_finish_takes_a_final_checkpoint_then_calls_back(make: Any) -> None:
    h = make()
    h.all_running()
    finals: list[str] = []
    h.manager.finish(lambda: finals.append("commit"))
    sent = h.take()
    [trigger] = {
        msg.checkpoint_id: msg for _, msg in sent if isinstance(msg, TriggerCheckpoint)
    }.values()
    assert finals == []
    h.ack_all(trigger)
    assert finals == ["commit"]
    assert [msg.completed for _, msg in h.done_messages(h.take())] == [True, True]
    assert h.manager.stopped == "finishing"
    h.clock.advance(10_000)
    h.manager.tick()
    assert h.take() == []  # nothing after the final checkpoint


def test_finish_waits_for_the_checkpoint_in_flight_then_takes_another(make: Any) -> None:
    h = make()
    h.all_running()
    first = h.trigger()
    finals: list[str] = []
    h.manager.finish(lambda: finals.append("commit"))
    assert h.take() == []  # at most one in flight
    h.ack_all(first)
    assert finals == []  # the one in flight began before every input ended
    final = next(msg for _, msg in h.take() if isinstance(msg, TriggerCheckpoint))
    assert final.checkpoint_id == first.checkpoint_id + 1
    h.ack_all(final)
    assert finals == ["commit"]


def test_a_failed_final_checkpoint_is_retried_and_counts_as_a_failure(make: Any) -> None:
    h = make(tolerable_failures=1)
    h.all_running()
    finals: list[str] = []
    h.manager.finish(lambda: finals.append("commit"))
    trigger = next(msg for _, msg in h.take() if isinstance(msg, TriggerCheckpoint))
    h.decline(trigger.checkpoint_id, "0.0", "disk full")
    h.take()
    h.manager.tick()
    retry = next(msg for _, msg in h.take() if isinstance(msg, TriggerCheckpoint))
    assert retry.checkpoint_id == trigger.checkpoint_id + 1
    h.decline(retry.checkpoint_id, "0.0", "disk full")
    assert finals == []
    assert h.failures and "2 checkpoints in a row failed" in h.failures[0]


def test_savepoints_are_refused_once_the_job_is_finishing(make: Any, tmp_path: Path) -> None:
    h = make()
    h.all_running()
    h.manager.finish(lambda: None)
    results: list[tuple[str | None, int, str | None]] = []
    h.manager.take_savepoint(
        SavepointRequest(directory=tmp_path / "sp", done=lambda *args: results.append(args))
    )
    assert results == [(None, 0, "the job is finishing")]


def test_a_checkpoint_the_store_cannot_record_is_aborted_not_completed(
    make: Any, tmp_path: Path
) -> None:
    h = make()
    h.all_running()
    trigger = h.trigger()
    h.store.close()  # every write now fails
    h.ack_all(trigger)
    assert h.manager.pending is None
    assert h.manager.completed == []
    assert not Path(trigger.directory, METADATA_FILE).exists()
    assert [msg.completed for _, msg in h.done_messages(h.take())] == [False, False]
    assert "cannot write the coordinator database" in (h.manager.last_failure or "")
    h.store = CheckpointStore(tmp_path / "coordinator.db")  # for the fixture's cleanup


def test_retention_removes_directories_of_aborted_checkpoints(make: Any) -> None:
    h = make(retained=1)
    h.all_running()
    aborted = h.trigger()
    h.decline(aborted.checkpoint_id, "0.0", "no")
    # A slow subtask writes into the aborted checkpoint's directory after the abort.
    Path(aborted.directory).mkdir(parents=True)
    Path(aborted.directory, "late.db").write_bytes(b"late")
    h.ack_all(h.trigger())
    assert not Path(aborted.directory).exists()
