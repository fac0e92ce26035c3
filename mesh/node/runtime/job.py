"""A job attempt on one node: from a deploy message to running subtasks.

``JobRuntime.prepare`` does everything that can fail before any record moves: it unpacks
and imports the job's code, rebuilds the graph and checks it is the submitted one, then
wires the subtasks placed here (``JobWiring``: input gates, output channels, local or
remote, operators) and registers the channels with the node's network. ``run`` starts every
subtask; each one's end (FINISHED, FAILED with its traceback, CANCELED) is reported
through ``on_update``. A failed subtask does not stop its siblings here: the coordinator
decides what happens to the job. While it runs, ``peek`` shows the coordinator a sample
of what a task's subtasks emit (``JobPeeks``).
"""

from __future__ import annotations

import logging
import random
import shutil
import sys
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from mesh._excgroups import unwrap
from mesh.api.job import BuiltJob
from mesh.api.loader import load_job
from mesh.errors import JobCodeError, MeshError
from mesh.graph.execution import ExecutionGraph, SubtaskRef, build_execution_graph
from mesh.graph.logical import JobConfig, LogicalGraph, OperatorSpec
from mesh.node.dataplane.channels import InputGate
from mesh.node.dataplane.network import NodeNetwork
from mesh.node.operators.context import TaskContext
from mesh.node.runtime.bundle import extract_bundle
from mesh.node.runtime.eventtime import EventTimeSettings
from mesh.node.runtime.peeking import JobPeeks
from mesh.node.runtime.record_traces import RecordSampler, RecordTraces
from mesh.node.runtime.recoverable import non_recoverable_cause
from mesh.node.runtime.restore import RestorePoint
from mesh.node.runtime.task import (
    CheckpointTarget,
    SubtaskPosition,
    SubtaskRunner,
    TaskInput,
    TaskOutput,
)
from mesh.node.runtime.wiring import JobWiring, SubtaskOutputs
from mesh.protocol.messages import (
    AckCheckpoint,
    CollectBatch,
    DeclineCheckpoint,
    DeployTasks,
    PeekTask,
    SnapshotFile,
    SourceWatermark,
    SubtaskMetrics,
    TaskUpdate,
)
from mesh.protocol.states import TaskState
from mesh.state.backends import KeyedStateBackend, open_backend
from mesh.state.keys import KeyCodec
from mesh.telemetry.tracing import tracing_enabled, within_trace
from mesh.time.clock import Clock
from mesh.time.watermarks import MAX_WATERMARK, NO_WATERMARK
from mesh.transport.barriers import BarrierPayload
from mesh.transport.sockets import SocketFactory

__all__ = ["JobRuntime"]

log = logging.getLogger("mesh.node.job")


class JobRuntime:
    """The subtasks of one job attempt placed on this node."""

    def __init__(
        self,
        deploy: DeployTasks,
        *,
        node_id: str,
        network: NodeNetwork,
        work_dir: Path,
        clock: Clock,
        send: Callable[[Any], None],
        sockets: SocketFactory | None = None,
    ) -> None:
        self.deploy = deploy
        self.job_id = deploy.job_id
        self.attempt = deploy.attempt
        self.node_id = node_id
        self._network = network
        self._work_dir = work_dir
        self._clock = clock
        # Sends a control message to the coordinator (never blocks).
        self._send = send
        self._sockets = sockets
        self.runners: dict[str, SubtaskRunner] = {}
        self.task_names: dict[str, str] = {}  # subtask -> its (chained) task's name
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._failures: dict[str, BaseException] = {}
        # Failed subtasks whose error no restart can fix.
        self._unrecoverable: set[str] = set()
        self._scope: anyio.CancelScope | None = None
        # The peeks at local subtasks, while the attempt runs (None: not running).
        self._peeks: JobPeeks | None = None
        self._module_names: list[str] = []
        self.started = False  # run() was called
        self._cancel_requested = False
        self._cancel_reason: str | None = None
        self._disposed = False
        # The job's settings (known once prepared).
        self.config: JobConfig = JobConfig(name=deploy.job_name)
        # The checkpoint this job starts from, if any.
        self._restore_point = RestorePoint(deploy.restore) if deploy.restore else None

    # -- preparing ------------------------------------------------------------------------

    def _load(self) -> tuple[BuiltJob, ExecutionGraph]:
        deploy = self.deploy
        code_dir = self._work_dir / "code"
        extract_bundle(deploy.bundle, code_dir)
        before = set(sys.modules)
        try:
            job = load_job(code_dir / deploy.entry, deploy.job_name, search_root=code_dir)
            built = job.build(**deploy.build_args)
        except MeshError:
            raise
        except Exception as exc:
            raise JobCodeError(f"building the job graph failed: {exc}") from exc
        finally:
            self._module_names = [m for m in sys.modules if m not in before]
        graph = LogicalGraph.from_dict(deploy.graph)
        if graph.fingerprint() != deploy.fingerprint:
            raise JobCodeError("the submitted job graph does not match its fingerprint")
        if built.graph.fingerprint() != deploy.fingerprint:
            diff = "; ".join(graph.differences(built.graph))
            raise JobCodeError(
                f"the job graph built on node {self.node_id} differs from the submitted one "
                f"(submitted vs built here: {diff}). Module-level code of a job file must be "
                "deterministic: it must build the same graph every time it is imported"
            )
        return built, build_execution_graph(graph)

    def prepare(self) -> None:
        """Load the code and wire the local subtasks; raises MeshError saying what failed.

        On failure everything it did is undone.
        """
        try:
            self._prepare()
        except BaseException:
            self.dispose()
            raise

    def _prepare(self) -> None:
        built, graph = self._load()
        self.config = graph.logical.config
        wiring = JobWiring(self.deploy, built, graph, node_id=self.node_id, network=self._network)
        gates = wiring.input_gates()
        outputs = wiring.outputs()
        for gate in gates.values():
            gate.seal()
        for ref in wiring.local:
            self.runners[str(ref)] = self._runner(wiring, ref, gates.get(ref), outputs[ref])
        self._network.register(wiring.channels)

    def _runner(
        self,
        wiring: JobWiring,
        ref: SubtaskRef,
        gate: InputGate | None,
        outputs: SubtaskOutputs,
    ) -> SubtaskRunner:
        """The runner of local subtask ``ref``, its channels already wired."""
        task = wiring.task(ref)
        config = wiring.config
        subtask = str(ref)
        self.task_names[subtask] = task.name
        ctx = TaskContext(
            job_id=self.job_id,
            attempt=self.attempt,
            node_id=self.node_id,
            task_name=task.name,
            subtask_index=ref.index,
            parallelism=task.parallelism,
            max_parallelism=config.max_parallelism,
            base_dir=Path(self.deploy.base_dir),
            clock=self._clock,
            collect=self._collector(subtask),
            sockets=self._sockets,
        )
        chain = wiring.chain(ref, ctx, self._backend_maker)
        watermarks = chain.watermarks
        runner = SubtaskRunner(
            name=f"{task.name} ({ref.index + 1}/{task.parallelism})",
            clock=self._clock,
            position=SubtaskPosition(ref.index, task.parallelism, config.max_parallelism),
            operators=chain.operators,
            reads=TaskInput(
                reader=chain.reader,
                source_spec=wiring.logical.operator(task.head) if chain.reader else None,
                read_batch=wiring.settings.buffer_records,
                gate=gate,
                exactly_once=config.checkpoint_mode == "exactly_once",
            ),
            writes=TaskOutput(
                writers=outputs.writers,
                buffer_timeout_ms=config.buffer_timeout_ms,
                side_outputs=outputs.side_outputs,
                max_backlog=wiring.settings.max_backlog,
            ),
            checkpoints=self._checkpoint_target(subtask),
            restored=wiring.restored(ref, self._restore_point),
            event_time=EventTimeSettings(
                timestamp=watermarks.timestamp if watermarks is not None else None,
                max_delay_ms=watermarks.max_delay_ms if watermarks is not None else 0,
                idle_timeout_ms=watermarks.idle_timeout_ms if watermarks is not None else None,
                watermark_interval_ms=config.watermark_interval_ms,
                align_group=watermarks.align_group if watermarks is not None else None,
                max_drift_ms=(watermarks.max_drift_ms or 0) if watermarks is not None else 0,
                report=(
                    partial(self._report_watermark, watermarks.align_group, subtask)
                    if watermarks is not None and watermarks.align_group is not None
                    else None
                ),
            ),
            record_traces=self._record_traces(
                task.name,
                ref.index,
                [
                    *([wiring.logical.operator(task.head).uid] if chain.reader else []),
                    *(op.spec.uid for op in chain.operators),
                ],
                is_source=chain.reader is not None,
            ),
        )
        runner.on_state = self._reporter(subtask)
        return runner

    def _record_traces(
        self, task_name: str, index: int, uids: list[str], *, is_source: bool
    ) -> RecordTraces:
        """Record tracing of one subtask; a source subtask samples records itself."""
        fraction = self.config.trace_sample
        sampler = (
            RecordSampler(
                fraction,
                random.Random(f"{self.job_id}/{task_name}/{index}"),
                self.config.trace_sample_limit,
            )
            if is_source and fraction > 0 and tracing_enabled()
            else None
        )
        attributes = {
            "mesh.job.id": self.job_id,
            "mesh.job.name": self.config.name,
            "mesh.job.attempt": self.attempt,
            "mesh.task": task_name,
            "mesh.subtask.index": index,
            "mesh.operator.uids": uids,
        }
        return RecordTraces(task_name, attributes, sampler)

    def _backend_maker(self, spec: OperatorSpec, index: int) -> Callable[[], KeyedStateBackend]:
        def make() -> KeyedStateBackend:
            return open_backend(
                self.config.state_backend,
                path=self._work_dir / "state" / f"{spec.uid}-{index}.db",
                codec=KeyCodec(spec.max_parallelism),
                clock=self._clock,
            )

        return make

    def _reporter(self, subtask: str) -> Callable[[SubtaskRunner], None]:
        def report(runner: SubtaskRunner) -> None:
            if runner.state is not TaskState.RUNNING:  # ENDING: it emits nothing more
                self._unpeek(subtask)
            self._report(subtask, runner)

        return report

    def _report(self, subtask: str, runner: SubtaskRunner) -> None:
        self._send(
            TaskUpdate(
                job_id=self.job_id,
                attempt=self.attempt,
                node_id=self.node_id,
                metrics=self.metrics_of(subtask),
                error=runner.error
                or (self._cancel_reason if runner.state is TaskState.CANCELED else None),
                recoverable=subtask not in self._unrecoverable,
            )
        )

    def _checkpoint_target(self, subtask: str) -> CheckpointTarget:
        def ack(
            checkpoint_id: int, files: list[SnapshotFile], duration_ms: float, alignment_ms: float
        ) -> None:
            self._send(
                AckCheckpoint(
                    job_id=self.job_id,
                    attempt=self.attempt,
                    checkpoint_id=checkpoint_id,
                    subtask=subtask,
                    files=files,
                    duration_ms=round(duration_ms, 1),
                    alignment_ms=round(alignment_ms, 1),
                )
            )

        def decline(checkpoint_id: int, reason: str) -> None:
            self._send(
                DeclineCheckpoint(
                    job_id=self.job_id,
                    attempt=self.attempt,
                    checkpoint_id=checkpoint_id,
                    subtask=subtask,
                    reason=reason,
                )
            )

        return CheckpointTarget(ack=ack, decline=decline)

    def _collector(self, subtask: str) -> Callable[[bytes], None]:
        def collect(payload: bytes) -> None:
            self._send(
                CollectBatch(
                    job_id=self.job_id, attempt=self.attempt, subtask=subtask, records=payload
                )
            )

        return collect

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every local subtask until each has ended, then release everything."""
        self.started = True
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                self._peeks = JobPeeks(
                    tg,
                    job_id=self.job_id,
                    attempt=self.attempt,
                    clock=self._clock,
                    runners=self.runners,
                    send=self._send,
                )
                if self._cancel_requested:
                    tg.cancel_scope.cancel()
                for subtask, runner in self.runners.items():
                    tg.start_soon(self._run_one, subtask, runner)
        finally:
            if self._peeks is not None:
                self._peeks.close()
                self._peeks = None
            self.dispose()

    async def _run_one(self, subtask: str, runner: SubtaskRunner) -> None:
        gate = runner.gate
        if gate is not None:
            gate.on_failure = lambda exc: self._fail_subtask(subtask, exc)
        runner.state = TaskState.RUNNING
        self._report(subtask, runner)
        try:
            with anyio.CancelScope() as scope:
                self._scopes[subtask] = scope
                try:
                    await runner.run()
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as exc:  # user code may raise SystemExit: it fails the task
                    self._failed(subtask, runner, unwrap(exc))
        finally:
            self._unpeek(subtask)
            if runner.state in (TaskState.RUNNING, TaskState.ENDING):
                if subtask in self._failures:  # a broken channel cancelled the subtask
                    self._failed(subtask, runner, self._failures[subtask])
                else:
                    runner.state = TaskState.CANCELED
            self._report(subtask, runner)

    def peek(self, msg: PeekTask) -> None:
        """Start, renew or stop showing the coordinator what task ``msg.task``'s subtasks
        here emit; asked of an attempt that does not run (yet, or any more), or of a
        task with no running subtask here, it does nothing."""
        peeks = self._peeks
        chosen = peeks.ask(msg.task, msg.max_per_second, msg.lease_ms) if peeks else []
        if not chosen:
            log.debug(
                "peek at task %d of job %s attempt %d: no running subtask of it here",
                msg.task,
                self.job_id,
                self.attempt,
            )

    def _unpeek(self, subtask: str) -> None:
        """``subtask`` emits nothing more: its peek ends."""
        if self._peeks is not None:
            self._peeks.subtask_ended(subtask)

    def _failed(self, subtask: str, runner: SubtaskRunner, exc: BaseException) -> None:
        runner.state = TaskState.FAILED
        cause = non_recoverable_cause(exc)
        if cause is not None:
            self._unrecoverable.add(subtask)
        runner.error = (
            f"subtask {runner.name} on node {self.node_id} failed"
            + (
                f" with an error no restart can fix ({type(cause).__name__}: {cause})"
                if cause is not None
                else ""
            )
            + ":\n"
            + "".join(traceback.format_exception(exc)).rstrip()
        )
        log.error("%s", runner.error)

    def _fail_subtask(self, subtask: str, exc: BaseException) -> None:
        self._failures.setdefault(subtask, exc)
        scope = self._scopes.get(subtask)
        if scope is not None:
            scope.cancel()

    def fail_running(self, exc: BaseException) -> None:
        """Fail every subtask of this attempt that still runs here, with ``exc``."""
        for subtask, runner in self.runners.items():
            if runner.state in (TaskState.RUNNING, TaskState.ENDING):
                self._fail_subtask(subtask, exc)

    def _report_watermark(
        self, group: str, subtask: str, watermark: int, idle: bool, ended: bool, paused: bool
    ) -> None:
        self._send(
            SourceWatermark(
                job_id=self.job_id,
                attempt=self.attempt,
                group=group,
                subtask=subtask,
                watermark=watermark,
                idle=idle,
                ended=ended,
                paused=paused,
            )
        )

    def watermark_bound(self, group: str, bound: int | None) -> None:
        """The coordinator moved alignment group ``group``'s bound."""
        for runner in self.runners.values():
            if runner.align_group == group:
                runner.set_watermark_bound(bound)

    def trigger_checkpoint(
        self,
        checkpoint_id: int,
        barrier: BarrierPayload,
        subtasks: list[str] | None = None,
    ) -> None:
        """Start a checkpoint at the subtasks that get no barrier: sources and subtasks whose
        input ended (or exactly ``subtasks``)."""
        for subtask, runner in self.runners.items():
            if subtasks is not None:
                chosen = subtask in subtasks
            else:
                chosen = runner.reader is not None or runner.state is TaskState.ENDING
            if chosen and runner.state in (TaskState.RUNNING, TaskState.ENDING):
                runner.trigger(checkpoint_id, barrier)

    def checkpoint_completed(self, checkpoint_id: int, trace: dict[str, str] | None = None) -> None:
        """Checkpoint ``checkpoint_id`` completed: operators commit (in the checkpoint's
        trace, when it is traced).

        A commit that fails fails its subtask (the job restarts and commits again).
        """
        with within_trace(trace):
            for subtask, runner in self.runners.items():
                if runner.state in (TaskState.RUNNING, TaskState.ENDING):
                    try:
                        runner.notify_checkpoint_complete(checkpoint_id)
                    except Exception as exc:
                        self._fail_subtask(subtask, exc)

    def commit_final(self) -> None:
        """Every subtask of the job ended: the ENDING ones commit and finish."""
        for runner in self.runners.values():
            runner.commit_final()

    def cancel(self, *, commit: bool, reason: str | None = None) -> None:
        """Stop every subtask; ``commit`` keeps the output sinks have written so far.

        A runtime that was prepared but never started is released at once, and each of
        its subtasks is reported CANCELED (with ``reason``, when the node decided it).
        """
        self._cancel_reason = reason
        for runner in self.runners.values():
            runner.commit_on_cancel = commit
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()
        elif not self.started:
            self.dispose()
            for subtask, runner in self.runners.items():
                runner.state = TaskState.CANCELED
                self._report(subtask, runner)

    def dispose(self) -> None:
        """Forget the job's channels, modules and files on this node (idempotent)."""
        if self._disposed:
            return
        self._disposed = True
        self._network.unregister(self.job_id, self.attempt)
        for name in self._module_names:
            sys.modules.pop(name, None)
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def metrics_of(self, subtask: str) -> SubtaskMetrics:
        """A snapshot of one local subtask's counters."""
        runner = self.runners[subtask]
        m = runner.metrics
        watermark: int | None = runner.watermark
        lag = None
        if watermark == NO_WATERMARK:
            watermark = None
        elif watermark != MAX_WATERMARK:
            lag = self._clock.now_ms() - runner.watermark
        progress = _progress_of(runner) if runner.reader is not None else None
        return SubtaskMetrics(
            subtask=subtask,
            state=runner.state,
            records_in=m.records_in,
            records_out=m.records_out,
            backpressure_ms=round(m.backpressure_total(self._clock.monotonic_ms()), 1),
            started_ms=m.started_ms,
            finished_ms=m.finished_ms,
            dead_letters=m.dead_letters,
            watermark=watermark,
            watermark_lag_ms=lag,
            late_records=sum(op.late_records for op in runner.operators),
            late_dropped=sum(op.late_dropped for op in runner.operators),
            input_fill=round(runner.gate.fill(), 3) if runner.gate is not None else None,
            source_done=progress[0] if progress is not None else None,
            source_total=progress[1] if progress is not None else None,
        )

    def metrics(self) -> list[SubtaskMetrics]:
        """A snapshot of every local subtask's counters."""
        return [self.metrics_of(subtask) for subtask in self.runners]


def _progress_of(runner: SubtaskRunner) -> tuple[int, int] | None:
    """How far a source subtask's reader got; None before it reads, or when a reader's
    ``progress`` (connector code) raises: metrics must not fail the subtask."""
    reader = runner.reader
    if reader is None or runner.state is TaskState.DEPLOYED:
        return None
    try:
        return reader.progress()
    except Exception:
        log.debug("%s: the reader's progress() raised", runner.name, exc_info=True)
        return None
