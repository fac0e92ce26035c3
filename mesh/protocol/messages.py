"""Control-plane messages between clients, the coordinator and nodes.

Directions: node → coordinator (register, heartbeat, leaving, deploy results, task
updates, checkpoint acks and declines, collected records); coordinator → node (deploy,
start, cancel, trigger and complete checkpoints, commit the final output); client →
coordinator (submit, list, status, cancel, savepoints, fetch results) with a reply for
every request. States and kinds are the enums of ``mesh.protocol.states``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mesh.protocol.codec import message
from mesh.protocol.states import CheckpointKind, TaskState

__all__ = [
    "Ack",
    "AckCheckpoint",
    "AwaitJobEnd",
    "CancelJob",
    "CancelTasks",
    "ChannelSettings",
    "CheckpointDone",
    "CheckpointList",
    "CollectBatch",
    "CollectedReply",
    "CommitFinal",
    "DeclineCheckpoint",
    "DeployResult",
    "DeployTasks",
    "ErrorReply",
    "FetchCollected",
    "GetJobStatus",
    "Heartbeat",
    "HeartbeatAck",
    "JobList",
    "JobStatusReply",
    "ListCheckpoints",
    "ListJobs",
    "ListNodes",
    "NodeLeaving",
    "NodeList",
    "PeekSamples",
    "PeekTask",
    "PeerAddress",
    "RegisterNode",
    "RegisterReply",
    "Reregister",
    "RestoreSpec",
    "SavepointTaken",
    "SlotInUse",
    "SnapshotFile",
    "SourceWatermark",
    "StartTasks",
    "SubmitJob",
    "SubmitReply",
    "SubtaskMetrics",
    "TakeSavepoint",
    "TaskAssignment",
    "TaskUpdate",
    "TriggerCheckpoint",
    "WatermarkBound",
]


# -- shared shapes -----------------------------------------------------------------------


@dataclass(frozen=True)
class SubtaskMetrics:
    """Counters of one subtask, as reported by its node."""

    subtask: str  # "task.index"
    state: TaskState
    records_in: int = 0
    records_out: int = 0
    backpressure_ms: float = 0.0  # time spent waiting for output credit
    started_ms: int = 0  # wall clock when the subtask started processing
    finished_ms: int = 0  # wall clock when it finished (0: not yet)
    dead_letters: int = 0  # records set aside because user code raised on them
    watermark: int | None = None  # the subtask's event time (None: none yet)
    watermark_lag_ms: int | None = None  # wall-clock time minus the watermark, when sampled
    late_records: int = 0  # records too late for their windows (side output or dropped)
    late_dropped: int = 0  # ... of which were dropped (no late side output)
    input_fill: float | None = None  # share of input buffers in use (None: a source)
    # A bounded source's input read so far and in all (bytes of files, records of a
    # collection); None: not a source, or its size is unknown.
    source_done: int | None = None
    source_total: int | None = None


@dataclass(frozen=True)
class PeerAddress:
    """Where a node receives data (PULL) and credits (ROUTER)."""

    node_id: str
    data_endpoint: str
    control_endpoint: str


@dataclass(frozen=True)
class ChannelSettings:
    """How channels of a job are sized; both ends of every channel use the same values."""

    exclusive_credits: int = 2  # buffer slots per input channel, known to the sender
    floating_credits: int = 8  # slots per input gate lent to channels with a backlog
    buffer_records: int = 1024  # records per buffer before it is sent
    max_backlog: int = 2  # buffers a sender queues per channel before its subtask waits


@dataclass(frozen=True)
class SnapshotFile:
    """One operator subtask's snapshot file: written at a barrier, acknowledged to the
    coordinator, listed in the checkpoint's ``_metadata.json`` and read back on restore —
    the same record all the way."""

    uid: str  # the operator's uid
    subtask: int  # the subtask index that wrote it
    file: str  # name inside the checkpoint directory
    size: int
    sha256: str
    key_groups: tuple[int, int] | None = None  # [start, end) of keyed state


@dataclass(frozen=True)
class RestoreSpec:
    """The checkpoint or savepoint a job starts from."""

    path: str  # the checkpoint directory
    checkpoint_id: int
    job_id: str  # the job that took it
    operators: dict[str, list[SnapshotFile]]  # by operator uid


@dataclass(frozen=True)
class TaskAssignment:
    """One subtask placed in one slot of one node."""

    subtask: str  # "task.index"
    node_id: str
    slot: int


@dataclass(frozen=True)
class SlotInUse:
    """A slot of a node that subtasks of a job attempt still occupy."""

    slot: int
    job_id: str
    attempt: int


# -- node → coordinator ------------------------------------------------------------------


@message("register_node")
@dataclass(frozen=True)
class RegisterNode:
    """A node offers its slots, saying which are still occupied (a coordinator that
    restarted rebuilds its view of the slots from these)."""

    node_id: str
    slots: int
    data_endpoint: str
    control_endpoint: str
    host: str
    pid: int
    version: str
    occupied: list[SlotInUse] = field(default_factory=list)


@message("heartbeat")
@dataclass(frozen=True)
class Heartbeat:
    """A node is alive; carries the metrics of its subtasks."""

    node_id: str
    tasks: dict[str, list[SubtaskMetrics]] = field(default_factory=dict)  # job -> metrics
    rss_bytes: int = 0
    wire_errors: int = 0
    occupied: list[SlotInUse] = field(default_factory=list)


@message("node_leaving")
@dataclass(frozen=True)
class NodeLeaving:
    """A node stops gracefully (SIGTERM), in two steps. First (``stopped`` False): it
    takes no new subtasks and the jobs it runs fail over now, not after the heartbeat
    timeout; their next attempt starts once its subtasks have reported stopping. Then
    (``stopped`` True): its subtasks have ended and it goes away."""

    node_id: str
    reason: str
    stopped: bool = False


@message("deploy_result")
@dataclass(frozen=True)
class DeployResult:
    """A node prepared (or failed to prepare) its subtasks of a job."""

    job_id: str
    attempt: int
    node_id: str
    ok: bool
    error: str | None = None


@message("task_update")
@dataclass(frozen=True)
class TaskUpdate:
    """A subtask changed state (RUNNING, FINISHED, FAILED, CANCELED)."""

    job_id: str
    attempt: int
    node_id: str
    metrics: SubtaskMetrics
    error: str | None = None
    # False for a FAILED subtask whose error no restart can fix (a configuration error,
    # a sink path that is a file, ...): the job fails at once, whatever its strategy.
    recoverable: bool = True


@message("collect_batch")
@dataclass(frozen=True)
class CollectBatch:
    """Records a ``Collect`` sink subtask sends back (an orjson-encoded list)."""

    job_id: str
    attempt: int
    subtask: str
    records: bytes


@message("ack_checkpoint")
@dataclass(frozen=True)
class AckCheckpoint:
    """A subtask wrote its part of a checkpoint."""

    job_id: str
    attempt: int
    checkpoint_id: int
    subtask: str
    files: list[SnapshotFile]
    duration_ms: float
    alignment_ms: float = 0.0  # from its first barrier to its snapshot (0: a source)


@message("decline_checkpoint")
@dataclass(frozen=True)
class DeclineCheckpoint:
    """A subtask could not take its part of a checkpoint."""

    job_id: str
    attempt: int
    checkpoint_id: int
    subtask: str
    reason: str


@message("source_watermark")
@dataclass(frozen=True)
class SourceWatermark:
    """A source subtask of an alignment group: its watermark, whether it is idle, and
    whether its input ended (see ``mesh.time.alignment``). A ``paused`` one repeats its
    report every tick, and is told the group's bound each time (in case a bound was
    lost on the way)."""

    job_id: str
    attempt: int
    group: str
    subtask: str
    watermark: int
    idle: bool = False
    ended: bool = False
    paused: bool = False


@message("peek_samples")
@dataclass(frozen=True)
class PeekSamples:
    """Records a subtask emitted while it was asked to show them (``PeekTask``): an
    orjson-encoded list, at most the rate it was allowed, held nowhere else."""

    job_id: str
    attempt: int
    subtask: str
    records: bytes


# -- coordinator → node ------------------------------------------------------------------


@message("peek_task")
@dataclass(frozen=True)
class PeekTask:
    """Send back a sample of the records the task's subtasks on this node emit: at most
    ``max_per_second`` per subtask, for ``lease_ms`` from now (asked again to go on;
    ``lease_ms`` 0 stops it now)."""

    job_id: str
    attempt: int
    task: int
    max_per_second: int
    lease_ms: int


@message("register_reply")
@dataclass(frozen=True)
class RegisterReply:
    """The coordinator's answer to a registration."""

    ok: bool
    heartbeat_interval_ms: int = 1000
    # A node that hears nothing from the coordinator for this long stops its subtasks.
    heartbeat_timeout_ms: int = 5000
    error: str | None = None


@message("heartbeat_ack")
@dataclass(frozen=True)
class HeartbeatAck:
    """The coordinator heard a heartbeat (a node counts the silence since the last one)."""


@message("reregister")
@dataclass(frozen=True)
class Reregister:
    """The coordinator does not know this node (it was declared lost): register again.

    Its jobs were failed when it was lost; the node drops what it still runs of them.
    """

    reason: str = ""


@message("deploy_tasks")
@dataclass(frozen=True)
class DeployTasks:
    """Prepare these subtasks of a job (channels, operators); do not start them yet."""

    job_id: str
    attempt: int
    graph: dict[str, Any]  # LogicalGraph.to_dict()
    fingerprint: str
    job_name: str
    entry: str  # the job file's path inside the bundle
    build_args: dict[str, Any]  # what the client passed to Job.build()
    base_dir: str  # relative paths in the job resolve against this
    assignments: list[TaskAssignment]  # every subtask of the job
    peers: list[PeerAddress]  # every node that runs part of the job
    channels: ChannelSettings
    bundle: bytes  # zip of the job's code
    restore: RestoreSpec | None = None
    # The attempt's random channel secret: data frames and credits carry tokens derived
    # from it (``mesh.transport.tokens``), so only the deployed peers can feed a channel.
    channel_secret: bytes = field(default=b"", repr=False)


@message("watermark_bound")
@dataclass(frozen=True)
class WatermarkBound:
    """The source subtasks of alignment group ``group`` read only while their watermark
    is at most ``bound`` (None: no bound)."""

    job_id: str
    attempt: int
    group: str
    bound: int | None


@message("trigger_checkpoint")
@dataclass(frozen=True)
class TriggerCheckpoint:
    """Take checkpoint ``checkpoint_id``, writing files to ``directory``.

    Without ``subtasks``: every source subtask and every subtask whose input ended (they
    see no barriers) on the node. With it: just those subtasks.
    """

    job_id: str
    attempt: int
    checkpoint_id: int
    kind: CheckpointKind
    directory: str
    subtasks: list[str] | None = None
    # The checkpoint's trace context (W3C traceparent), when the coordinator traces.
    trace: dict[str, str] | None = None


@message("checkpoint_done")
@dataclass(frozen=True)
class CheckpointDone:
    """Checkpoint ``checkpoint_id`` completed (sinks commit) or was aborted."""

    job_id: str
    attempt: int
    checkpoint_id: int
    completed: bool
    # The checkpoint's trace context, so the sinks' commits join its trace.
    trace: dict[str, str] | None = None


@message("commit_final")
@dataclass(frozen=True)
class CommitFinal:
    """Every subtask of the job ended: sinks commit their last transaction."""

    job_id: str
    attempt: int


@message("start_tasks")
@dataclass(frozen=True)
class StartTasks:
    """Every node is ready: start the job's subtasks."""

    job_id: str
    attempt: int


@message("cancel_tasks")
@dataclass(frozen=True)
class CancelTasks:
    """Stop every subtask of a job on this node."""

    job_id: str
    attempt: int
    reason: str = ""
    # Make what sinks wrote visible before stopping (a person cancelled a job that has
    # no checkpoints); otherwise uncommitted output is dropped.
    commit: bool = False


# -- client ↔ coordinator ----------------------------------------------------------------


@message("submit_job")
@dataclass(frozen=True)
class SubmitJob:
    """Run a job (from a savepoint or checkpoint directory if ``restore_from`` is set)."""

    graph: dict[str, Any]
    job_name: str
    entry: str
    build_args: dict[str, Any]
    base_dir: str
    bundle: bytes
    restore_from: str | None = None


@message("take_savepoint")
@dataclass(frozen=True)
class TakeSavepoint:
    """Take a savepoint (into ``directory``, or the default); cancel the job after it."""

    job_id: str
    directory: str | None = None
    cancel: bool = False


@message("savepoint_taken")
@dataclass(frozen=True)
class SavepointTaken:
    """The savepoint is complete."""

    path: str
    checkpoint_id: int


@message("list_checkpoints")
@dataclass(frozen=True)
class ListCheckpoints:
    """Ask for a job's completed checkpoints and savepoints."""

    job_id: str


@message("checkpoint_list")
@dataclass(frozen=True)
class CheckpointList:
    """Completed checkpoints and savepoints, oldest first."""

    checkpoints: list[dict[str, Any]]


@message("submit_reply")
@dataclass(frozen=True)
class SubmitReply:
    """The job was accepted; ``waiting`` says why it waits for slots, if it does."""

    job_id: str
    waiting: str | None = None


@message("list_jobs")
@dataclass(frozen=True)
class ListJobs:
    """Ask for every job."""


@message("job_list")
@dataclass(frozen=True)
class JobList:
    """One summary per job."""

    jobs: list[dict[str, Any]]


@message("get_job_status")
@dataclass(frozen=True)
class GetJobStatus:
    """Ask for one job's status."""

    job_id: str


@message("await_job_end")
@dataclass(frozen=True)
class AwaitJobEnd:
    """Ask for a job's status once it has ended (answered at once if it has)."""

    job_id: str


@message("job_status")
@dataclass(frozen=True)
class JobStatusReply:
    """A job's status (graph, placement, metrics) as a JSON object."""

    status: dict[str, Any]


@message("cancel_job")
@dataclass(frozen=True)
class CancelJob:
    """Stop a job."""

    job_id: str


@message("fetch_collected")
@dataclass(frozen=True)
class FetchCollected:
    """Ask for the records ``Collect`` sinks sent back, from ``offset`` on."""

    job_id: str
    offset: int = 0


@message("collected")
@dataclass(frozen=True)
class CollectedReply:
    """Collected records (an orjson-encoded list) from the requested offset."""

    next_offset: int
    complete: bool  # the job ended and everything was returned
    records: bytes


@message("list_nodes")
@dataclass(frozen=True)
class ListNodes:
    """Ask for every registered node."""


@message("node_list")
@dataclass(frozen=True)
class NodeList:
    """One summary per node."""

    nodes: list[dict[str, Any]]


@message("ack")
@dataclass(frozen=True)
class Ack:
    """A request succeeded and has nothing more to say."""

    detail: str = ""


@message("error")
@dataclass(frozen=True)
class ErrorReply:
    """A request failed; ``code`` is a short machine-readable reason."""

    message: str
    code: str = "error"
