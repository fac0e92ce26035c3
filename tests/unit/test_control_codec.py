"""Control-plane messages on the wire (mesh/protocol/codec.py, mesh/protocol/messages.py)."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import FrameError
from mesh.protocol import messages as m
from mesh.protocol.codec import PROTOCOL_VERSION, Envelope, decode, encode, message
from mesh.protocol.states import CheckpointKind, TaskState

METRICS = m.SubtaskMetrics(
    subtask="1.0",
    state=TaskState.RUNNING,
    records_in=10,
    records_out=7,
    backpressure_ms=12.5,
    started_ms=1_700_000_000_000,
    finished_ms=0,
    input_fill=0.25,
)
GRAPH = {"name": "wordcount", "operators": [{"id": 1, "kind": "source"}], "edges": []}
BINARY = bytes(range(256)) + b"\x00\xff not utf-8: \xc3\x28"

# One instance of every registered message, with every field set away from its default.
EXAMPLES: list[Any] = [
    m.RegisterNode(
        node_id="node-a",
        slots=4,
        data_endpoint="tcp://10.0.0.1:6001",
        control_endpoint="tcp://10.0.0.1:6002",
        host="host-a",
        pid=4242,
        version="0.1.0",
        occupied=[m.SlotInUse(slot=3, job_id="job-1", attempt=1)],
    ),
    m.Heartbeat(
        node_id="node-a",
        tasks={"job-1": [METRICS, dataclasses.replace(METRICS, subtask="2.1")], "job-2": []},
        rss_bytes=123_456_789,
        wire_errors=3,
        occupied=[m.SlotInUse(slot=0, job_id="job-1", attempt=2)],
    ),
    m.NodeLeaving(node_id="node-a", reason="stopped (SIGTERM)", stopped=True),
    m.DeployResult(job_id="job-1", attempt=2, node_id="node-a", ok=False, error="no space"),
    m.TaskUpdate(job_id="job-1", attempt=2, node_id="node-a", metrics=METRICS, error="Traceback"),
    m.CollectBatch(job_id="job-1", attempt=2, subtask="3.0", records=orjson.dumps([1, "a"])),
    m.PeekSamples(job_id="job-1", attempt=2, subtask="1.0", records=orjson.dumps([{"k": 1}])),
    m.PeekTask(job_id="job-1", attempt=2, task=1, max_per_second=5, lease_ms=10_000),
    m.RegisterReply(
        ok=False, heartbeat_interval_ms=250, heartbeat_timeout_ms=1000, error="duplicate node id"
    ),
    m.HeartbeatAck(),
    m.Reregister(reason="unknown node (declared lost)"),
    m.TriggerCheckpoint(
        job_id="job-1",
        attempt=0,
        checkpoint_id=7,
        kind=CheckpointKind.SAVEPOINT,
        directory="/ckpt/sp-7",
    ),
    m.CheckpointDone(job_id="job-1", attempt=0, checkpoint_id=7, completed=True),
    m.CommitFinal(job_id="job-1", attempt=0),
    m.AckCheckpoint(
        job_id="job-1",
        attempt=0,
        checkpoint_id=7,
        subtask="1.0",
        files=[
            m.SnapshotFile(
                uid="sum-2",
                subtask=0,
                file="sum-2-0.db",
                size=8192,
                sha256="ab" * 32,
                key_groups=(0, 64),
            )
        ],
        duration_ms=12.5,
        alignment_ms=3.5,
    ),
    m.DeclineCheckpoint(
        job_id="job-1", attempt=0, checkpoint_id=7, subtask="0.1", reason="disk full"
    ),
    m.TakeSavepoint(job_id="job-1", directory="/tmp/sp", cancel=True),
    m.SavepointTaken(path="/tmp/sp/savepoint-7", checkpoint_id=7),
    m.ListCheckpoints(job_id="job-1"),
    m.CheckpointList(checkpoints=[{"id": 7, "kind": "savepoint", "size": 8192}]),
    m.DeployTasks(
        job_id="job-1",
        attempt=2,
        graph=GRAPH,
        fingerprint="sha256:abc",
        job_name="wordcount",
        entry="jobs/wc.py",
        build_args={"path": "/data", "n": 3, "flags": [True, None]},
        base_dir="/home/user/project",
        assignments=[
            m.TaskAssignment(subtask="0.0", node_id="node-a", slot=0),
            m.TaskAssignment(subtask="1.0", node_id="node-b", slot=1),
        ],
        peers=[
            m.PeerAddress("node-a", "tcp://10.0.0.1:6001", "tcp://10.0.0.1:6002"),
            m.PeerAddress("node-b", "tcp://10.0.0.2:6001", "tcp://10.0.0.2:6002"),
        ],
        channels=m.ChannelSettings(exclusive_credits=3, floating_credits=5),
        bundle=BINARY,
        channel_secret=bytes(range(16)),
        restore=m.RestoreSpec(
            path="/ckpt/job/chk-3",
            checkpoint_id=3,
            job_id="job-0",
            operators={
                "sum-2": [
                    m.SnapshotFile(
                        uid="sum-2",
                        subtask=0,
                        file="sum-2-0.db",
                        size=8192,
                        sha256="ab" * 32,
                        key_groups=(0, 64),
                    )
                ]
            },
        ),
    ),
    m.StartTasks(job_id="job-1", attempt=2),
    m.CancelTasks(job_id="job-1", attempt=2, reason="user request"),
    m.SubmitJob(
        graph=GRAPH,
        job_name="wordcount",
        entry="wc.py",
        build_args={},
        base_dir=".",
        bundle=b"PK\x03\x04" + BINARY,
    ),
    m.SubmitReply(job_id="job-1", waiting="job needs 3 slot(s)"),
    m.ListJobs(),
    m.JobList(jobs=[{"job_id": "job-1", "state": "RUNNING"}, {}]),
    m.GetJobStatus(job_id="job-1"),
    m.AwaitJobEnd(job_id="job-1"),
    m.SourceWatermark(
        job_id="job-1", attempt=0, group="g", subtask="0.1", watermark=-(2**63), paused=True
    ),
    m.WatermarkBound(job_id="job-1", attempt=0, group="g", bound=1_700_000_030_000),
    m.JobStatusReply(status={"state": "FAILED", "metrics": [{"x": 1.5}], "error": None}),
    m.CancelJob(job_id="job-1"),
    m.FetchCollected(job_id="job-1", offset=17),
    m.CollectedReply(next_offset=20, complete=True, records=b""),
    m.ListNodes(),
    m.NodeList(nodes=[{"node_id": "node-a", "slots": 4}]),
    m.Ack(detail="done"),
    m.ErrorReply(message="no such job", code="not_found"),
]
BY_TYPE = {msg.TYPE: msg for msg in EXAMPLES}
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def registered_classes() -> list[type[Any]]:
    return [
        cls
        for name in m.__all__
        if isinstance(cls := getattr(m, name), type) and hasattr(cls, "TYPE")
    ]


def bytes_fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.type in ("bytes", bytes)]


def json_fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in bytes_fields(cls)]


def frames_of(type_name: str, body: Any, *attachments: bytes, **header: Any) -> list[bytes]:
    head = {"v": PROTOCOL_VERSION, "type": type_name, **header}
    return [orjson.dumps(head), orjson.dumps(body), *attachments]


def body_of(msg: Any) -> dict[str, Any]:
    """The JSON body ``encode`` produces for ``msg``, as a dict to tamper with."""
    body = orjson.loads(encode(msg)[1])
    assert isinstance(body, dict)
    return body


def attachments_of(msg: Any) -> list[bytes]:
    return encode(msg)[2:]


def well_typed(value: Any, annotation: Any) -> bool:
    """Does ``value`` have exactly the type a message field declares (bool is not int)?"""
    if annotation is Any:
        return True
    if annotation in (bool, int, float, str, bytes, type(None)):
        return type(value) is annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return type(value) is annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        return (
            type(value) is tuple
            and len(value) == len(args)
            and all(well_typed(x, a) for x, a in zip(value, args, strict=True))
        )
    if origin in (types.UnionType, typing.Union):
        return any(well_typed(value, arg) for arg in args)
    if origin is list:
        return type(value) is list and all(well_typed(x, args[0]) for x in value)
    if origin is dict:
        return type(value) is dict and all(
            type(k) is str and well_typed(v, args[1]) for k, v in value.items()
        )
    if dataclasses.is_dataclass(annotation):
        hints = typing.get_type_hints(annotation)
        return type(value) is annotation and all(
            well_typed(getattr(value, f.name), hints[f.name])
            for f in dataclasses.fields(annotation)
        )
    raise AssertionError(f"well_typed does not know {annotation!r}")


def decode_or_frame_error(frames: list[bytes]) -> Envelope | None:
    """decode's contract: an Envelope, or a FrameError and nothing else."""
    try:
        envelope = decode(frames)
    except FrameError as exc:
        assert str(exc)
        return None
    assert isinstance(envelope, Envelope)
    return envelope


# -- round trips -------------------------------------------------------------------------


def test_examples_are_well_typed() -> None:
    for msg in EXAMPLES:
        assert well_typed(msg, type(msg)), msg
    assert not well_typed(dataclasses.replace(METRICS, records_in=True), m.SubtaskMetrics)


def test_examples_cover_every_registered_message() -> None:
    registered = {cls.TYPE: cls for cls in registered_classes()}
    assert sorted(BY_TYPE) == sorted(registered)
    assert len(BY_TYPE) == len(EXAMPLES), "two examples of the same message type"
    for type_name, msg in BY_TYPE.items():
        assert type(msg) is registered[type_name]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda msg: msg.TYPE)
def test_round_trip_with_rid_and_trace(msg: Any) -> None:
    envelope = decode(encode(msg, rid="req-17", trace=TRACE))
    assert envelope == Envelope(message=msg, rid="req-17", trace=TRACE)
    assert well_typed(envelope.message, type(msg))


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda msg: msg.TYPE)
def test_round_trip_without_rid_or_trace(msg: Any) -> None:
    frames = encode(msg)
    header = orjson.loads(frames[0])
    assert header == {"v": PROTOCOL_VERSION, "type": msg.TYPE}
    assert decode(frames) == Envelope(message=msg)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda msg: msg.TYPE)
def test_round_trip_from_memoryviews(msg: Any) -> None:
    frames = [memoryview(f) for f in encode(msg, rid="r")]
    assert decode(frames) == Envelope(message=msg, rid="r")


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda msg: msg.TYPE)
def test_bytes_fields_travel_as_attachments_in_declaration_order(msg: Any) -> None:
    frames = encode(msg)
    names = bytes_fields(type(msg))
    assert frames[2:] == [getattr(msg, name) for name in names]
    body = orjson.loads(frames[1])
    assert sorted(body) == sorted(json_fields(type(msg)))


def test_nested_dataclasses_come_back_as_dataclasses() -> None:
    deploy = decode(encode(BY_TYPE["deploy_tasks"])).message
    assert all(type(a) is m.TaskAssignment for a in deploy.assignments)
    assert all(type(p) is m.PeerAddress for p in deploy.peers)
    heartbeat = decode(encode(BY_TYPE["heartbeat"])).message
    assert all(type(x) is m.SubtaskMetrics for x in heartbeat.tasks["job-1"])
    update = decode(encode(BY_TYPE["task_update"])).message
    assert type(update.metrics) is m.SubtaskMetrics


def test_omitted_fields_take_their_defaults() -> None:
    assert decode(frames_of("ack", {})).message == m.Ack()
    assert decode(frames_of("heartbeat", {"node_id": "n"})).message == m.Heartbeat(node_id="n")
    update = decode(
        frames_of(
            "task_update",
            {
                "job_id": "j",
                "attempt": 0,
                "node_id": "n",
                "metrics": {"subtask": "0.0", "state": "RUNNING"},
            },
        )
    ).message
    assert update.error is None
    assert update.metrics == m.SubtaskMetrics(subtask="0.0", state=TaskState.RUNNING)


def test_float_field_accepts_a_json_integer_as_float() -> None:
    body = body_of(METRICS_UPDATE := BY_TYPE["task_update"])
    body["metrics"]["backpressure_ms"] = 3
    update = decode(frames_of("task_update", body)).message
    assert update.metrics.backpressure_ms == 3.0
    assert type(update.metrics.backpressure_ms) is float
    assert update == dataclasses.replace(
        METRICS_UPDATE, metrics=dataclasses.replace(METRICS, backpressure_ms=3.0)
    )


def test_optional_field_accepts_null() -> None:
    body = body_of(BY_TYPE["deploy_result"])
    body["error"] = None
    assert decode(frames_of("deploy_result", body)).message.error is None


def test_empty_trace_is_not_sent() -> None:
    frames = encode(m.Ack(), trace={})
    assert "trace" not in orjson.loads(frames[0])
    assert decode(frames).trace is None


def test_registering_a_type_name_twice_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Impostor:
        detail: str = ""

    with pytest.raises(ValueError, match="message type 'ack' registered twice"):
        message("ack")(Impostor)
    assert decode(encode(m.Ack("x"))).message == m.Ack("x")


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_frames(count: int) -> None:
    with pytest.raises(
        FrameError, match=rf"control message has {count} frame\(s\), need at least 2"
    ):
        decode(encode(m.Ack())[:count])


def test_header_not_json() -> None:
    with pytest.raises(FrameError, match="control header is not JSON"):
        decode([b"{nope", b"{}"])


@pytest.mark.parametrize("header", [b"[]", b"1", b'"ack"', b"null"])
def test_header_not_an_object(header: bytes) -> None:
    with pytest.raises(FrameError, match="control header must be a JSON object"):
        decode([header, b"{}"])


@pytest.mark.parametrize(("version", "shown"), [(2, "2"), (0, "0"), ("1", "'1'"), (None, "None")])
def test_wrong_version(version: Any, shown: str) -> None:
    frames = frames_of("ack", {})
    frames[0] = orjson.dumps({"v": version, "type": "ack"})
    with pytest.raises(FrameError, match=rf"unsupported control protocol version {shown} "):
        decode(frames)


def test_missing_version() -> None:
    with pytest.raises(FrameError, match="unsupported control protocol version None"):
        decode([orjson.dumps({"type": "ack"}), b"{}"])


def test_boolean_version_is_not_version_1() -> None:
    with pytest.raises(FrameError, match="unsupported control protocol version True"):
        decode([orjson.dumps({"v": True, "type": "ack"}), b"{}"])


@pytest.mark.parametrize(("type_name", "shown"), [("nope", "'nope'"), (5, "5"), (None, "None")])
def test_unknown_type(type_name: Any, shown: str) -> None:
    with pytest.raises(FrameError, match=rf"unknown control message type {shown}$"):
        decode(frames_of(type_name, {}))


def test_type_names_are_not_looked_up_as_attributes() -> None:
    with pytest.raises(FrameError, match="unknown control message type '__class__'"):
        decode(frames_of("__class__", {}))


def test_rid_must_be_a_string() -> None:
    with pytest.raises(FrameError, match="control header rid must be a string"):
        decode(frames_of("ack", {}, rid=7))


def test_trace_must_be_an_object() -> None:
    with pytest.raises(FrameError, match="control header trace must be an object"):
        decode(frames_of("ack", {}, trace=["x"]))


def test_body_not_json_names_the_type() -> None:
    with pytest.raises(FrameError, match="cancel_job: body is not JSON"):
        decode([orjson.dumps({"v": 1, "type": "cancel_job"}), b"{job_id"])


@pytest.mark.parametrize("body", [[], "x", 1, None])
def test_body_not_an_object_names_the_type(body: Any) -> None:
    with pytest.raises(FrameError, match="cancel_job: body must be a JSON object"):
        decode(frames_of("cancel_job", body))


@pytest.mark.parametrize(
    ("type_name", "attachments", "expected", "got"),
    [
        ("collect_batch", [], 1, 0),
        ("collect_batch", [b"[]", b"[]"], 1, 2),
        ("ack", [b""], 0, 1),
        ("deploy_tasks", [], 2, 0),
        ("deploy_tasks", [b"zip"], 2, 1),
    ],
)
def test_wrong_attachment_count_names_the_type(
    type_name: str, attachments: list[bytes], expected: int, got: int
) -> None:
    frames = encode(BY_TYPE[type_name])[:2] + attachments
    with pytest.raises(
        FrameError, match=rf"^{type_name}: expected {expected} attachment\(s\), got {got}$"
    ):
        decode(frames)


REQUIRED = [
    pytest.param(msg.TYPE, f.name, id=f"{msg.TYPE}.{f.name}")
    for msg in EXAMPLES
    for f in dataclasses.fields(msg)
    if f.name in json_fields(type(msg))
    and f.default is dataclasses.MISSING
    and f.default_factory is dataclasses.MISSING
]
ALL_JSON_FIELDS = [
    pytest.param(msg.TYPE, name, id=f"{msg.TYPE}.{name}")
    for msg in EXAMPLES
    for name in json_fields(type(msg))
]


@pytest.mark.parametrize(("type_name", "field"), REQUIRED)
def test_missing_required_field_names_message_and_field(type_name: str, field: str) -> None:
    msg = BY_TYPE[type_name]
    body = body_of(msg)
    del body[field]
    with pytest.raises(FrameError, match=rf"^{type_name}: missing field '{field}'$"):
        decode(frames_of(type_name, body, *attachments_of(msg)))


@pytest.mark.parametrize(("type_name", "field"), ALL_JSON_FIELDS)
def test_wrong_field_type_names_message_and_field(type_name: str, field: str) -> None:
    # No field of any message accepts a list holding a list.
    msg = BY_TYPE[type_name]
    body = body_of(msg)
    body[field] = [[1]]
    with pytest.raises(FrameError, match=rf"^{type_name}\.{field}(\[0\])?: expected "):
        decode(frames_of(type_name, body, *attachments_of(msg)))


@pytest.mark.parametrize(
    ("type_name", "field", "value", "message"),
    [
        ("register_node", "slots", "4", "register_node.slots: expected int, got str"),
        ("register_node", "slots", True, "register_node.slots: expected int, got bool"),
        ("register_node", "slots", 4.0, "register_node.slots: expected int, got float"),
        ("register_node", "host", 5, "register_node.host: expected string, got int"),
        ("register_node", "host", None, "register_node.host: expected string, got NoneType"),
        ("register_reply", "ok", 1, "register_reply.ok: expected bool, got int"),
        ("register_reply", "error", 5, "register_reply.error: expected string, got int"),
        ("job_list", "jobs", {}, "job_list.jobs: expected list, got dict"),
        ("job_list", "jobs", [{}, 3], r"job_list.jobs\[1\]: expected object, got int"),
        ("job_status", "status", [], "job_status.status: expected object, got list"),
        ("task_update", "metrics", "m", "task_update.metrics: expected object, got str"),
    ],
)
def test_wrong_field_type_message(type_name: str, field: str, value: Any, message: str) -> None:
    msg = BY_TYPE[type_name]
    body = body_of(msg)
    body[field] = value
    with pytest.raises(FrameError, match=rf"^{message}$"):
        decode(frames_of(type_name, body, *attachments_of(msg)))


def test_nested_errors_name_the_path() -> None:
    deploy = BY_TYPE["deploy_tasks"]
    body = body_of(deploy)
    body["assignments"][1]["slot"] = "1"
    with pytest.raises(
        FrameError, match=r"^deploy_tasks\.assignments\[1\]\.slot: expected int, got str$"
    ):
        decode(frames_of("deploy_tasks", body, *attachments_of(deploy)))

    body = body_of(deploy)
    del body["peers"][0]["data_endpoint"]
    with pytest.raises(
        FrameError, match=r"^deploy_tasks\.peers\[0\]: missing field 'data_endpoint'$"
    ):
        decode(frames_of("deploy_tasks", body, *attachments_of(deploy)))

    body = body_of(BY_TYPE["heartbeat"])
    body["tasks"]["job-1"][1]["records_in"] = False
    with pytest.raises(
        FrameError, match=r"^heartbeat\.tasks\.job-1\[1\]\.records_in: expected int, got bool$"
    ):
        decode(frames_of("heartbeat", body))

    body = body_of(BY_TYPE["task_update"])
    body["metrics"]["backpressure_ms"] = True
    with pytest.raises(
        FrameError, match=r"^task_update\.metrics\.backpressure_ms: expected number, got bool$"
    ):
        decode(frames_of("task_update", body))


# -- garbage never escapes as anything but FrameError -----------------------------------


@given(st.lists(st.binary(max_size=64), max_size=5))
def test_random_frames_raise_only_frame_error(frames: list[bytes]) -> None:
    decode_or_frame_error(frames)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def plausible_frames(draw: st.DrawFn) -> list[bytes]:
    """Well-formed JSON shaped like a control message, with random values and counts."""

    def mostly(valid: Any, *invalid: Any) -> Any:
        # Mostly valid, so that most examples get past the header into the body checks.
        if draw(st.integers(0, 7)) > 0:
            return valid
        return draw(st.sampled_from(invalid))

    msg = draw(st.sampled_from(EXAMPLES))
    header: dict[str, Any] = {
        "v": mostly(PROTOCOL_VERSION, 2, None, "1"),
        "type": mostly(msg.TYPE, "nope", 3),
    }
    if draw(st.booleans()):
        header["rid"] = mostly(draw(st.text(max_size=5)), 7, None, [])
    if draw(st.booleans()):
        header["trace"] = mostly(draw(st.dictionaries(st.text(max_size=5), json_values)), 1, [])
    body = body_of(msg)
    for name in draw(st.lists(st.sampled_from([*body, "extra"]), max_size=3)) if body else []:
        action = draw(st.sampled_from(["drop", "replace", "replace"]))
        if action == "drop":
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    count = mostly(len(attachments_of(msg)), 0, 1, 2)
    attachments = draw(st.lists(st.binary(max_size=8), min_size=count, max_size=count))
    raw_body = mostly(orjson.dumps(body), b"[]", b"{", b"")
    return [orjson.dumps(header), raw_body, *attachments]


@given(plausible_frames())
def test_plausible_garbage_raises_only_frame_error(frames: list[bytes]) -> None:
    envelope = decode_or_frame_error(frames)
    if envelope is not None:
        # Whatever was accepted is a well-typed message and survives a second round trip.
        assert well_typed(envelope.message, type(envelope.message))
        assert envelope.rid is None or type(envelope.rid) is str
        assert envelope.trace is None or type(envelope.trace) is dict
        again = decode(encode(envelope.message, rid=envelope.rid, trace=envelope.trace))
        assert again.message == envelope.message
        assert again.rid == envelope.rid


@given(st.sampled_from(EXAMPLES), st.data())
def test_any_single_field_value_either_decodes_or_names_the_field(
    msg: Any, data: st.DataObject
) -> None:
    fields = json_fields(type(msg))
    if not fields:
        return
    name = data.draw(st.sampled_from(fields))
    body = body_of(msg)
    body[name] = data.draw(json_values)
    try:
        decoded = decode(frames_of(msg.TYPE, body, *attachments_of(msg))).message
    except FrameError as exc:
        assert str(exc).startswith(f"{msg.TYPE}.{name}"), str(exc)
    else:
        # Accepted: the value has the declared type and every other field is untouched.
        assert well_typed(decoded, type(msg))
        for other in dataclasses.fields(msg):
            if other.name != name:
                assert getattr(decoded, other.name) == getattr(msg, other.name)
