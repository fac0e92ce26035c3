"""Watermark alignment across nodes: the coordinator keeps each running job attempt's
alignment groups (``mesh.time.alignment``), takes the reports of their source subtasks
(``SourceWatermark``) and, whenever a group's bound moves, tells the nodes running its
members (``WatermarkBound``). The groups come from the sources' watermark strategies
(``align_group``, ``max_drift_ms`` in the graph); a new attempt starts them afresh.
"""

from __future__ import annotations

import logging

from mesh.coordinator.jobs import JobRecord, JobTable
from mesh.coordinator.outbound import ControlOut
from mesh.graph.logical import OperatorKind
from mesh.protocol.messages import SourceWatermark, WatermarkBound
from mesh.time.alignment import AlignmentGroup

__all__ = ["WatermarkAligner", "alignment_groups"]

log = logging.getLogger("mesh.coordinator.alignment")


def alignment_groups(job: JobRecord) -> dict[str, AlignmentGroup]:
    """The alignment groups of ``job``'s sources, by name; members are the source
    subtasks ("task.index"). A group's drift is the smallest its sources ask for."""
    members: dict[str, list[str]] = {}
    drifts: dict[str, int] = {}
    logical = job.graph.job.logical
    for task in job.graph.job.tasks:
        head = logical.operator(task.head)
        if head.kind is not OperatorKind.SOURCE:
            continue
        watermarks = head.description.get("watermarks") or {}
        group = watermarks.get("align_group")
        if group is None:
            continue
        members.setdefault(group, []).extend(f"{task.id}.{i}" for i in range(task.parallelism))
        drift = int(watermarks["max_drift_ms"])
        drifts[group] = min(drifts.get(group, drift), drift)
    return {name: AlignmentGroup(names, drifts[name]) for name, names in members.items()}


class WatermarkAligner:
    """Answers ``SourceWatermark`` reports with ``WatermarkBound`` updates."""

    def __init__(self, jobs: JobTable, out: ControlOut) -> None:
        self._jobs = jobs
        self._out = out
        # (job id, attempt) -> its groups; made at the attempt's first report.
        self._groups: dict[tuple[str, int], dict[str, AlignmentGroup]] = {}
        # (job id, attempt, group) -> the bound the members were last told.
        self._told: dict[tuple[str, int, str], int | None] = {}

    def on_source_watermark(self, msg: SourceWatermark) -> None:
        """A member reported: move its group's bound and tell the members' nodes."""
        job = self._jobs.get(msg.job_id)
        if job is None or job.attempt != msg.attempt or job.done:
            return  # a late report of an attempt that is over
        key = (job.job_id, job.attempt)
        groups = self._groups.get(key)
        if groups is None:
            # Older attempts of the job are over: forget them.
            self.job_ended(job)
            groups = self._groups[key] = alignment_groups(job)
        group = groups.get(msg.group)
        if group is None or msg.subtask not in group.members:
            log.warning(
                "job %s: watermark report from %s for unknown alignment group %r",
                job.job_id,
                msg.subtask,
                msg.group,
            )
            return
        group.update(msg.subtask, msg.watermark, idle=msg.idle, ended=msg.ended)
        told = (job.job_id, job.attempt, msg.group)
        bound = WatermarkBound(
            job_id=job.job_id, attempt=job.attempt, group=msg.group, bound=group.bound
        )
        if told in self._told and self._told[told] == group.bound:
            if msg.paused:  # it waits: tell it again, in case the bound was lost
                for node in {a.node_id for a in job.assignments if a.subtask == msg.subtask}:
                    self._out.to_node(node, bound)
            return
        self._told[told] = group.bound
        nodes = {a.node_id for a in job.assignments if a.subtask in group.members}
        for node in sorted(nodes):
            self._out.to_node(node, bound)

    def job_ended(self, job: JobRecord) -> None:
        """Forget ``job``'s groups."""
        for key in [k for k in self._groups if k[0] == job.job_id]:
            del self._groups[key]
        for told in [k for k in self._told if k[0] == job.job_id]:
            del self._told[told]
