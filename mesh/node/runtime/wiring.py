"""Wiring the subtasks of one job attempt placed on this node.

``JobWiring`` reads a deploy message and the job graph and builds, in named steps:

1. ``input_gates``: an input gate per local consumer subtask, one input channel per
   upstream subtask; credits for a remote producer go back over the network.
2. ``outputs``: the output channels (a local link to a same-node consumer, a remote
   link otherwise) and an ``EdgeWriter`` per outgoing edge; side-output edges (dead
   letters among them) by operator uid and tag.
3. ``chain``: a subtask's operators (or its source reader) and sink.
4. ``restored``: what each operator of a subtask gets back from the restore point.

It opens no files and starts nothing: ``JobRuntime`` turns the pieces into runners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.api.job import BuiltJob
from mesh.api.watermarks import WatermarkStrategy
from mesh.connectors.base import SourceReader
from mesh.graph.chaining import TaskSpec
from mesh.graph.execution import ExecutionGraph, SubtaskRef
from mesh.graph.logical import OperatorKind, OperatorSpec
from mesh.node.connectors.factory import build_reader, build_sink
from mesh.node.dataplane.channels import InputGate, LocalCreditReturn, LocalLink, OutputChannel
from mesh.node.dataplane.network import JobChannels, NodeNetwork, RemoteCreditReturn, RemoteLink
from mesh.node.operators.base import RestoredState, RuntimeOperator
from mesh.node.operators.combine import Combiner
from mesh.node.operators.context import TaskContext
from mesh.node.operators.factory import build_operator
from mesh.node.operators.keyed import COMBINERS
from mesh.node.runtime.chain import SideOutputs
from mesh.node.runtime.output import EdgeWriter
from mesh.node.runtime.restore import RestorePoint
from mesh.protocol.messages import DeployTasks, PeerAddress
from mesh.state.backends import KeyedStateBackend
from mesh.transport import tokens

__all__ = ["BackendFor", "ChainParts", "JobWiring", "SubtaskOutputs"]

#: Makes the keyed state backend of operator ``spec`` in subtask ``index`` (lazily).
BackendFor = Callable[[OperatorSpec, int], Callable[[], KeyedStateBackend]]


@dataclass
class SubtaskOutputs:
    """The output edges of one local subtask."""

    writers: list[EdgeWriter] = field(default_factory=list)
    side_outputs: SideOutputs = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChainParts:
    """What one subtask runs: its source reader (a source subtask) and its operators."""

    operators: list[RuntimeOperator]
    reader: SourceReader | None
    watermarks: WatermarkStrategy | None  # the source's, if it has one


class JobWiring:
    """The local share of one job attempt, and the steps that build its subtasks."""

    def __init__(
        self,
        deploy: DeployTasks,
        built: BuiltJob,
        graph: ExecutionGraph,
        *,
        node_id: str,
        network: NodeNetwork,
    ) -> None:
        self.job_id = deploy.job_id
        self.attempt = deploy.attempt
        self.node_id = node_id
        self.built = built
        self.graph = graph
        self.logical = graph.logical
        self.config = graph.logical.config
        self.settings = deploy.channels
        self._network = network
        # Which node runs each subtask, and how to reach the other nodes.
        self.placement = {SubtaskRef.parse(a.subtask): a.node_id for a in deploy.assignments}
        self.peers: dict[str, PeerAddress] = {p.node_id: p for p in deploy.peers}
        #: The subtasks placed on this node, in order.
        self.local = sorted(ref for ref, node in self.placement.items() if node == node_id)
        #: Every channel end on this node, registered with the network once all is built.
        self.channels = JobChannels(self.job_id, self.attempt)
        self._secret = deploy.channel_secret

    def token(self, channel_id: int, direction: str) -> bytes:
        """The token frames of ``channel_id`` carry over the network in ``direction``."""
        return tokens.channel_token(self._secret, self.job_id, self.attempt, channel_id, direction)

    def task(self, ref: SubtaskRef) -> TaskSpec:
        """The task ``ref`` is a subtask of."""
        return self.graph.job.tasks[ref.task]

    def label(self, channel_id: int) -> str:
        """A channel as people read it: job, id, producer and consumer subtasks."""
        ch = self.graph.channels[channel_id]
        tasks = self.graph.job.tasks
        return (
            f"{self.job_id}#{channel_id} ({tasks[ch.producer.task].name} {ch.producer.index} "
            f"-> {tasks[ch.consumer.task].name} {ch.consumer.index})"
        )

    # -- 1. input gates -------------------------------------------------------------------

    def input_gates(self) -> dict[SubtaskRef, InputGate]:
        """An input gate per local subtask that has inputs (not sealed yet)."""
        settings = self.settings
        gates: dict[SubtaskRef, InputGate] = {}
        for ref in self.local:
            inputs = self.graph.input_channels(ref)
            if not inputs:
                continue
            gate = InputGate(
                exclusive=settings.exclusive_credits, floating=settings.floating_credits
            )
            for ch in inputs:
                producer_node = self.placement[ch.producer]
                if producer_node == self.node_id:
                    credit_return: Any = None  # set once the producer's channel exists
                    peer = f"local subtask {ch.producer}"
                else:
                    self.channels.peers.add(producer_node)
                    credit_return = RemoteCreditReturn(
                        self._network.peer(self.peers[producer_node]),
                        self.job_id,
                        self.attempt,
                        self.token(ch.id, tokens.CREDIT),
                    )
                    self.channels.data_tokens[ch.id] = self.token(ch.id, tokens.DATA)
                    peer = f"node {producer_node}"
                self.channels.inputs[ch.id] = gate.add_channel(
                    ch.id, credit_return, label=self.label(ch.id), peer=peer
                )
            gates[ref] = gate
        return gates

    # -- 2. outputs -----------------------------------------------------------------------

    def outputs(self) -> dict[SubtaskRef, SubtaskOutputs]:
        """The output channels and edge writers of every local subtask (after
        ``input_gates``: a same-node consumer's input channel must exist)."""
        outputs = {ref: SubtaskOutputs() for ref in self.local}
        for ref in self.local:
            for edge in self.graph.job.outputs_of(ref.task):
                producer = self.logical.operator(edge.source_op)
                channels = [
                    self._output_channel(ch.id, self.placement[ch.consumer])
                    for ch in self.graph.output_channels(edge.id, ref.index)
                ]
                writer = EdgeWriter(
                    producer=producer,
                    consumer=self.logical.operator(edge.target_op),
                    partitioning=edge.partitioning,
                    channels=channels,
                    subtask_index=ref.index,
                    buffer_records=self.settings.buffer_records,
                    key_fn=self.built.edge_key_fns.get((edge.source_op, edge.target_op)),
                    lenient_keys=self.config.on_error == "dead_letter",
                    timed=producer.event_time,
                    combiner=self._combiner(edge.source_op, edge.target_op),
                )
                outputs[ref].writers.append(writer)
                if edge.tag is not None:
                    by_tag = outputs[ref].side_outputs.setdefault(producer.uid, {})
                    by_tag.setdefault(edge.tag, []).append(writer)
        return outputs

    def _combiner(self, producer: int, consumer: int) -> Combiner | None:
        """The combiner of a keyed edge into an aggregation that takes partials."""
        spec = self.logical.operator(consumer)
        key_fn = self.built.edge_key_fns.get((producer, consumer))
        if not spec.description.get("combined") or key_fn is None:
            return None
        definition = self.built.operator(consumer)
        return Combiner(
            spec,
            key_fn,
            fn=definition.fn,
            field_name=definition.field_name,
            aggregate=definition.aggregate,
            combine=COMBINERS.get(spec.kind),
        )

    def _output_channel(self, channel_id: int, consumer_node: str) -> OutputChannel:
        link: Any
        if consumer_node == self.node_id:
            link = LocalLink(self.channels.inputs[channel_id])
        else:
            self.channels.peers.add(consumer_node)
            link = RemoteLink(
                self._network.peer(self.peers[consumer_node]),
                self.job_id,
                self.attempt,
                self.token(channel_id, tokens.DATA),
            )
            self.channels.credit_tokens[channel_id] = self.token(channel_id, tokens.CREDIT)
        out = OutputChannel(
            channel_id, self.settings.exclusive_credits, link, self.label(channel_id)
        )
        if consumer_node == self.node_id:
            self.channels.inputs[channel_id].credit_return = LocalCreditReturn(out)
        self.channels.outputs[channel_id] = out
        return out

    # -- 3. chains ------------------------------------------------------------------------

    def chain(self, ref: SubtaskRef, ctx: TaskContext, backend_for: BackendFor) -> ChainParts:
        """The source reader and operators of subtask ``ref``."""
        task = self.task(ref)
        reader = None
        watermarks = None
        operators: list[RuntimeOperator] = []
        for op_id in task.operators:
            spec = self.logical.operator(op_id)
            definition = self.built.operator(op_id)
            if definition.kind is OperatorKind.SOURCE:
                assert definition.source is not None
                reader = build_reader(spec, definition.source, ctx)
                watermarks = definition.watermarks
            elif definition.kind is OperatorKind.SINK:
                assert definition.sink is not None
                operators.append(build_sink(spec, definition.sink, ctx))
            else:
                operators.append(
                    build_operator(
                        spec,
                        definition,
                        backend=backend_for(spec, ref.index),
                        subtask_index=ref.index,
                        parallelism=task.parallelism,
                    )
                )
        return ChainParts(operators, reader, watermarks)

    # -- 4. restored state ----------------------------------------------------------------

    def restored(self, ref: SubtaskRef, point: RestorePoint | None) -> dict[str, RestoredState]:
        """What each operator of subtask ``ref`` gets back from ``point``, by uid."""
        restored: dict[str, RestoredState] = {}
        if point is None:
            return restored
        task = self.task(ref)
        for uid in [self.logical.operator(o).uid for o in task.operators]:
            state = point.state_for(uid, ref.index, task.parallelism, self.config.max_parallelism)
            if state is not None:
                restored[uid] = state
        return restored
