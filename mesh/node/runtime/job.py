"""A job attempt on one node: from a deploy message to running subtasks.

``JobRuntime.prepare`` does everything that can fail before any record moves: it unpacks
and imports the job's code, rebuilds the graph and checks it is the submitted one, then
wires the subtasks placed here — input gates, output channels (local or remote),
operators — and registers the channels with the node's network. ``run`` starts every
subtask; each one's end (FINISHED, FAILED with its traceback, CANCELED) is reported
through ``on_update``. A failed subtask does not stop its siblings here: the coordinator
decides what happens to the job.
"""

from __future__ import annotations

import logging
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from mesh._excgroups import unwrap
from mesh.api.job import BuiltJob
from mesh.api.loader import load_job
from mesh.errors import JobCodeError, MeshError
from mesh.graph.execution import ExecutionGraph, SubtaskRef, build_execution_graph
from mesh.graph.logical import JobConfig, LogicalGraph, OperatorSpec
from mesh.node.connectors.factory import build_reader, build_sink
from mesh.node.dataplane.channels import InputGate, LocalCreditReturn, LocalLink, OutputChannel
from mesh.node.dataplane.network import JobChannels, NodeNetwork, RemoteCreditReturn, RemoteLink
from mesh.node.operators.base import RuntimeOperator
from mesh.node.operators.context import TaskContext
from mesh.node.operators.factory import build_operator
from mesh.node.runtime.bundle import extract_bundle
from mesh.node.runtime.output import EdgeWriter
from mesh.node.runtime.restore import RestorePoint
from mesh.node.runtime.task import CheckpointTarget, SnapshotFile, SubtaskRunner, TaskState
from mesh.protocol.messages import (
    AckCheckpoint,
    CheckpointFile,
    CollectBatch,
    DeclineCheckpoint,
    DeployTasks,
    PeerAddress,
    SubtaskMetrics,
    TaskUpdate,
)
from mesh.state.backends import KeyedStateBackend, open_backend
from mesh.state.keys import KeyCodec
from mesh.time.clock import Clock
from mesh.time.watermarks import MAX_WATERMARK, NO_WATERMARK
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
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._failures: dict[str, BaseException] = {}
        self._scope: anyio.CancelScope | None = None
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
        deploy = self.deploy
        built, eg = self._load()
        graph = eg.logical
        config = self.config = graph.config
        settings = deploy.channels
        exclusive = settings.exclusive_credits
        buffer_records = settings.buffer_records
        placement = {SubtaskRef.parse(a.subtask): a.node_id for a in deploy.assignments}
        peers: dict[str, PeerAddress] = {p.node_id: p for p in deploy.peers}
        local = sorted(ref for ref, node in placement.items() if node == self.node_id)
        tasks = eg.job.tasks
        channels = JobChannels(self.job_id, self.attempt)

        def label(ch_id: int) -> str:
            ch = eg.channels[ch_id]
            return (
                f"{self.job_id}#{ch_id} ({tasks[ch.producer.task].name} {ch.producer.index} -> "
                f"{tasks[ch.consumer.task].name} {ch.consumer.index})"
            )

        # 1. input gates; credits for remote producers go back over the network.
        gates: dict[SubtaskRef, InputGate] = {}
        for ref in local:
            inputs = eg.input_channels(ref)
            if not inputs:
                continue
            gate = InputGate(exclusive=exclusive, floating=settings.floating_credits)
            for ch in inputs:
                producer_node = placement[ch.producer]
                if producer_node == self.node_id:
                    credit_return: Any = None  # set once the producer's channel exists
                    peer = f"local subtask {ch.producer}"
                else:
                    address = peers[producer_node]
                    credit_return = RemoteCreditReturn(
                        self._network.peer(address), self.job_id, self.attempt
                    )
                    peer = f"node {producer_node}"
                channels.inputs[ch.id] = gate.add_channel(
                    ch.id, credit_return, label=label(ch.id), peer=peer
                )
            gates[ref] = gate

        # 2. output channels and the writers of every outgoing edge.
        writers: dict[SubtaskRef, list[EdgeWriter]] = {ref: [] for ref in local}
        # Side outputs (dead letters among them), by operator uid and tag.
        side_outputs: dict[SubtaskRef, dict[str, dict[str, list[EdgeWriter]]]] = {
            ref: {} for ref in local
        }
        lenient_keys = config.on_error == "dead_letter"
        for ref in local:
            for edge in eg.job.outputs_of(ref.task):
                outs = []
                for ch in eg.output_channels(edge.id, ref.index):
                    consumer_node = placement[ch.consumer]
                    link: Any
                    if consumer_node == self.node_id:
                        target = channels.inputs[ch.id]
                        link = LocalLink(target)
                    else:
                        link = RemoteLink(
                            self._network.peer(peers[consumer_node]), self.job_id, self.attempt
                        )
                    out = OutputChannel(ch.id, exclusive, link, label(ch.id))
                    if consumer_node == self.node_id:
                        channels.inputs[ch.id].credit_return = LocalCreditReturn(out)
                    channels.outputs[ch.id] = out
                    outs.append(out)
                writer = EdgeWriter(
                    producer=graph.operator(edge.source_op),
                    consumer=graph.operator(edge.target_op),
                    partitioning=edge.partitioning,
                    channels=outs,
                    subtask_index=ref.index,
                    buffer_records=buffer_records,
                    key_fn=built.edge_key_fns.get((edge.source_op, edge.target_op)),
                    lenient_keys=lenient_keys,
                    timed=graph.operator(edge.source_op).event_time,
                )
                writers[ref].append(writer)
                if edge.tag is not None:
                    uid = graph.operator(edge.source_op).uid
                    side_outputs[ref].setdefault(uid, {}).setdefault(edge.tag, []).append(writer)
        for gate in gates.values():
            gate.seal()

        # 3. operators and runners.
        for ref in local:
            task = tasks[ref.task]
            ctx = TaskContext(
                job_id=self.job_id,
                attempt=self.attempt,
                node_id=self.node_id,
                task_name=task.name,
                subtask_index=ref.index,
                parallelism=task.parallelism,
                max_parallelism=config.max_parallelism,
                base_dir=Path(deploy.base_dir),
                clock=self._clock,
                collect=self._collector(str(ref)),
                sockets=self._sockets,
            )
            reader = None
            watermarks = None
            operators: list[RuntimeOperator] = []
            for op_id in task.operators:
                spec = graph.operator(op_id)
                definition = built.operator(op_id)
                if definition.kind == "source":
                    assert definition.source is not None
                    reader = build_reader(definition.source, ctx)
                    watermarks = definition.watermarks
                elif definition.kind == "sink":
                    assert definition.sink is not None
                    operators.append(build_sink(spec, definition.sink, ctx))
                else:
                    operators.append(
                        build_operator(
                            spec,
                            definition,
                            backend=self._backend_maker(spec, ref.index, config.state_backend),
                            subtask_index=ref.index,
                            parallelism=task.parallelism,
                        )
                    )
            source_spec = graph.operator(task.head) if reader is not None else None
            restored = {}
            if self._restore_point is not None:
                for uid in [graph.operator(o).uid for o in task.operators]:
                    state = self._restore_point.state_for(
                        uid, ref.index, task.parallelism, config.max_parallelism
                    )
                    if state is not None:
                        restored[uid] = state
            subtask = str(ref)
            runner = SubtaskRunner(
                name=f"{task.name} ({ref.index + 1}/{task.parallelism})",
                operators=operators,
                writers=writers[ref],
                clock=self._clock,
                buffer_timeout_ms=config.buffer_timeout_ms,
                read_batch=buffer_records,
                max_backlog=settings.max_backlog,
                subtask_index=ref.index,
                parallelism=task.parallelism,
                max_parallelism=config.max_parallelism,
                checkpoints=self._checkpoint_target(subtask),
                exactly_once=config.checkpoint_mode == "exactly_once",
                reader=reader,
                source_spec=source_spec,
                gate=gates.get(ref),
                restored=restored,
                side_outputs=side_outputs[ref],
                timestamp=watermarks.timestamp if watermarks is not None else None,
                max_delay_ms=watermarks.max_delay_ms if watermarks is not None else 0,
                idle_timeout_ms=watermarks.idle_timeout_ms if watermarks is not None else None,
                watermark_interval_ms=config.watermark_interval_ms,
            )
            runner.on_state = self._reporter(subtask)
            self.runners[subtask] = runner
        self._network.register(channels)

    def _backend_maker(
        self, spec: OperatorSpec, index: int, kind: str
    ) -> Callable[[], KeyedStateBackend]:
        def make() -> KeyedStateBackend:
            return open_backend(
                kind,
                path=self._work_dir / "state" / f"{spec.uid}-{index}.db",
                codec=KeyCodec(spec.max_parallelism),
                clock=self._clock,
            )

        return make

    def _reporter(self, subtask: str) -> Callable[[SubtaskRunner], None]:
        def report(runner: SubtaskRunner) -> None:
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
            )
        )

    def _checkpoint_target(self, subtask: str) -> CheckpointTarget:
        def ack(checkpoint_id: int, files: list[SnapshotFile], duration_ms: float) -> None:
            self._send(
                AckCheckpoint(
                    job_id=self.job_id,
                    attempt=self.attempt,
                    checkpoint_id=checkpoint_id,
                    subtask=subtask,
                    files=[
                        CheckpointFile(
                            uid=f.uid,
                            file=f.file,
                            size=f.size,
                            sha256=f.sha256,
                            key_groups=list(f.key_groups) if f.key_groups else None,
                        )
                        for f in files
                    ],
                    duration_ms=round(duration_ms, 1),
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
                if self._cancel_requested:
                    tg.cancel_scope.cancel()
                for subtask, runner in self.runners.items():
                    tg.start_soon(self._run_one, subtask, runner)
        finally:
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
                    self._failed(runner, unwrap(exc))
        finally:
            if runner.state in (TaskState.RUNNING, TaskState.ENDING):
                if subtask in self._failures:  # a broken channel cancelled the subtask
                    self._failed(runner, self._failures[subtask])
                else:
                    runner.state = TaskState.CANCELED
            self._report(subtask, runner)

    def _failed(self, runner: SubtaskRunner, exc: BaseException) -> None:
        runner.state = TaskState.FAILED
        runner.error = (
            f"subtask {runner.name} on node {self.node_id} failed:\n"
            + "".join(traceback.format_exception(exc)).rstrip()
        )
        log.error("%s", runner.error)

    def _fail_subtask(self, subtask: str, exc: BaseException) -> None:
        self._failures.setdefault(subtask, exc)
        scope = self._scopes.get(subtask)
        if scope is not None:
            scope.cancel()

    def trigger_checkpoint(
        self, checkpoint_id: int, kind: str, directory: str, subtasks: list[str] | None = None
    ) -> None:
        """Start a checkpoint at the subtasks that get no barrier: sources and subtasks whose
        input ended (or exactly ``subtasks``)."""
        for subtask, runner in self.runners.items():
            if subtasks is not None:
                chosen = subtask in subtasks
            else:
                chosen = runner.reader is not None or runner.state is TaskState.ENDING
            if chosen and runner.state in (TaskState.RUNNING, TaskState.ENDING):
                runner.trigger(checkpoint_id, kind, directory)

    def checkpoint_completed(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: operators commit.

        A commit that fails fails its subtask (the job restarts and commits again).
        """
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
        return SubtaskMetrics(
            subtask=subtask,
            state=runner.state.value,
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
        )

    def metrics(self) -> list[SubtaskMetrics]:
        """A snapshot of every local subtask's counters."""
        return [self.metrics_of(subtask) for subtask in self.runners]
