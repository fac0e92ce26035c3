"""Sampled record traces from real daemons on two nodes, received over real OTLP/HTTP.

With ``trace_sample=1.0`` every source record starts a trace: a span for the chained
source task that read it, then, across the keyed exchange (between the two nodes for
about half the records), a span for the task that received it — a child of the
producer's span that also links to it, because the context rides in the frame.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from mesh.client.client import prepare_submission
from tests.helpers import poll_until, run_job, write_job
from tests.otlp import Span, otlp_receiver

RECORDS = 200

# Three operators, two chained tasks: "numbers -> double" and "collect".
JOB = f"""
    from mesh import Job, sinks, sources

    job = Job("sampled", parallelism=2, trace_sample=1.0, trace_sample_limit=None)
    (
        job.source(sources.Collection(range({RECORDS}))).name("numbers").uid("numbers")
        .map(lambda n: {{"n": n, "twice": 2 * n}}).name("double").uid("double")
        .key_by(lambda r: r["n"] % 2)
        .sink(sinks.Collect()).name("collect").uid("collect")
    )
"""


def _is_record_span(span: Span) -> bool:
    return span.attributes.get("mesh.job.name") == "sampled" and "mesh.records" in span.attributes


def _hops(spans: list[Span]) -> list[tuple[Span, Span]]:
    """(producer, consumer) span pairs of record traces that crossed between nodes."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        if _is_record_span(span):
            by_trace[span.trace_id].append(span)
    found = []
    for trace in by_trace.values():
        roots = [s for s in trace if s.parent_id is None]
        children = [s for s in trace if s.parent_id is not None]
        if len(roots) == 1 and len(children) == 1 and roots[0].instance != children[0].instance:
            found.append((roots[0], children[0]))
    return found


@pytest.mark.asyncio
async def test_a_sampled_record_is_one_trace_with_a_span_per_task_linked_across_the_hop(
    local_cluster, tmp_path: Path
) -> None:
    with otlp_receiver() as receiver:
        args = ["--otlp-endpoint", receiver.endpoint]
        cluster = local_cluster(nodes=2, slots=1, coordinator_args=args, node_args=args)
        job_file = write_job(tmp_path, JOB)
        status, collected = await run_job(cluster.address, job_file, base_dir=tmp_path)
        assert status["state"] == "FINISHED", status
        # Tracing changes nothing about the records.
        assert sorted(r["n"] for r in collected) == list(range(RECORDS))
        hops = await poll_until(
            lambda: _hops(receiver.snapshot()),
            timeout_s=30,
            what="a record trace whose two spans come from different nodes",
            show=lambda found: f"{len(receiver.snapshot())} spans, {len(found)} such traces",
        )
        spans = [s for s in receiver.snapshot() if _is_record_span(s)]

    producer, consumer = hops[0]
    assert producer.service == consumer.service == "mesh-node"
    assert producer.name == "numbers -> double"
    assert consumer.name == "collect"
    assert producer.attributes["mesh.records"] == 1
    assert producer.attributes["mesh.operator.uids"] == ["numbers", "double"]
    assert consumer.attributes["mesh.operator.uids"] == ["collect"]
    assert consumer.parent_id == producer.span_id
    assert consumer.links[0][:2] == (producer.trace_id, producer.span_id)
    assert "mesh.channel" in consumer.links[0][2]
    for span in (producer, consumer):
        assert span.attributes["mesh.job.id"] == status["job_id"]
        assert span.attributes["mesh.job.attempt"] == 0
        assert span.attributes["mesh.subtask.index"] in (0, 1)
        assert span.error is None
    # Every trace has one span per chained task it passed, never two of one task.
    by_trace: dict[str, list[str]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span.attributes["mesh.task"])
    assert all(len(tasks) == len(set(tasks)) <= 2 for tasks in by_trace.values())
    # Every record started a trace at its source subtask.
    roots = [s for s in spans if s.parent_id is None]
    assert len(roots) == RECORDS
    assert {s.attributes["mesh.task"] for s in roots} == {producer.name}
    assert receiver.bad_requests == []


def test_trace_sample_must_be_a_fraction(tmp_path: Path) -> None:
    from mesh.errors import JobCodeError

    job_file = write_job(tmp_path, JOB.replace("trace_sample=1.0", "trace_sample=2"))
    with pytest.raises(JobCodeError, match="trace_sample must be a fraction from 0 to 1, got 2"):
        prepare_submission(job_file)
