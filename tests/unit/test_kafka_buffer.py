"""The exactly-once Kafka sink's buffer (mesh/connectors/kafka/sink.py): what a checkpoint
keeps of the records written since the last barrier. No broker: the writer does no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mesh import sinks
from mesh.connectors.context import TaskContext
from mesh.errors import EncodingError
from mesh.time.clock import ManualClock


def _writer(**settings: Any) -> Any:
    sink = sinks.Kafka("out", bootstrap="127.0.0.1:9", **settings)
    ctx = TaskContext(
        job_id="job-1",
        attempt=0,
        node_id="node-1",
        task_name="kafka",
        subtask_index=2,
        parallelism=3,
        max_parallelism=128,
        base_dir=Path("."),
        clock=ManualClock(),
        operator_uid="out",
    )
    return sink.create_writer(ctx)


def _pairs(committable: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """(key, value) of every record of a committable, values decoded from JSON."""
    if "value_lines" in committable:
        values = committable["value_lines"].split("\n")
        keys = committable["key_lines"]
        keys = keys.split("\n") if keys is not None else [None] * len(values)
        assert committable["count"] == len(values) == len(keys)
        return [(k, orjson.loads(v)) for k, v in zip(keys, values, strict=True)]
    assert committable["values"] == "text"
    return [(k, orjson.loads(v)) for k, v in committable["records"]]


def test_json_records_with_text_keys_are_kept_as_lines() -> None:
    writer = _writer(key="user")
    writer.write([{"user": "a", "n": 1}, {"user": "b", "n": 'two "2"\nlines'}])
    writer.write([{"user": "a", "n": 3}])
    committable = writer.prepare_commit("job-1-out-2-000001")
    assert committable["owner"] == "mesh-job-1-out-2" and committable["topic"] == "out"
    assert "records" not in committable  # lines, not per-record pairs
    assert _pairs(committable) == [
        ("a", {"user": "a", "n": 1}),
        ("b", {"user": "b", "n": 'two "2"\nlines'}),
        ("a", {"user": "a", "n": 3}),
    ]
    assert orjson.loads(orjson.dumps(committable)) == committable  # checkpoint state: JSON
    assert writer.prepare_commit("job-1-out-2-000002") is None  # nothing since


def test_a_key_that_is_not_text_switches_the_buffer_to_pairs() -> None:
    writer = _writer(key=lambda r: r.get("k"))
    writer.write([{"k": "a", "n": 1}, {"k": "b", "n": 2}])
    writer.write([{"n": 3}, {"k": "line\nbreak", "n": 4}])  # no key; a key with a newline
    committable = writer.prepare_commit("t")
    assert committable["keys"] == "text"
    assert _pairs(committable) == [
        ("a", {"k": "a", "n": 1}),
        ("b", {"k": "b", "n": 2}),
        (None, {"n": 3}),
        ("line\nbreak", {"k": "line\nbreak", "n": 4}),
    ]
    writer.write([{"k": "c", "n": 5}])  # the next checkpoint starts as lines again
    assert "value_lines" in writer.prepare_commit("t2")


def test_unkeyed_records_keep_no_keys() -> None:
    writer = _writer()
    writer.write([1, "two", [3]])
    committable = writer.prepare_commit("t")
    assert committable["key_lines"] is None
    assert _pairs(committable) == [(None, 1), (None, "two"), (None, [3])]


def test_a_record_that_is_not_json_is_named() -> None:
    writer = _writer()
    with pytest.raises(EncodingError, match=r"Kafka sink 'out' \(topic 'out'\).*set"):
        writer.write([{"ok": 1}, {1, 2}])


def test_abort_drops_the_buffer() -> None:
    writer = _writer(key="user")
    writer.write([{"user": "a"}])
    writer.abort()
    assert writer.prepare_commit("t") is None
