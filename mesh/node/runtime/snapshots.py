"""A subtask's part of a checkpoint: capture every operator's state at the barrier (on
the loop, so it is consistent with the records around the barrier), then finish the
files off the loop and describe them for the coordinator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from mesh import faults
from mesh.connectors.base import SourceReader
from mesh.graph.keygroups import KeyGroupRange
from mesh.graph.logical import OperatorSpec
from mesh.node.operators.base import RuntimeOperator
from mesh.protocol.messages import SnapshotFile
from mesh.state.backends import SnapshotJob
from mesh.state.snapshot import create_snapshot_file, file_info

__all__ = ["SnapshotCapture", "capture_state", "finish_snapshot"]


@dataclass(frozen=True, slots=True)
class SnapshotCapture:
    """One operator's state, taken at a barrier; ``job`` finishes a backend's file."""

    spec: OperatorSpec
    path: Path
    job: SnapshotJob | None
    keyed: bool


def capture_state(
    *,
    checkpoint_id: int,
    directory: Path,
    index: int,
    parallelism: int,
    max_parallelism: int,
    key_groups: KeyGroupRange,
    reader: SourceReader | None,
    source_spec: OperatorSpec | None,
    operators: Sequence[RuntimeOperator],
) -> list[SnapshotCapture]:
    """Take the source position and every stateful operator's state now; what the
    captures hold is released if one of them fails."""
    captures: list[SnapshotCapture] = []
    meta = {
        "checkpoint_id": checkpoint_id,
        "subtask": index,
        "parallelism": parallelism,
        "max_parallelism": max_parallelism,
    }
    try:
        if reader is not None and source_spec is not None:
            path = directory / f"{source_spec.uid}-{index}.db"
            create_snapshot_file(
                path, {**meta, "uid": source_spec.uid}, {"splits": reader.snapshot(checkpoint_id)}
            )
            captures.append(SnapshotCapture(source_spec, path, None, keyed=False))
        for op in operators:
            state = op.snapshot_state(checkpoint_id)
            if not op.stateful:
                continue
            path = directory / f"{op.spec.uid}-{index}.db"
            groups = [key_groups.start, key_groups.end]
            create_snapshot_file(path, {**meta, "uid": op.spec.uid, "key_groups": groups}, state)
            job = op.backend.begin_snapshot(path) if op.backend is not None else None
            captures.append(SnapshotCapture(op.spec, path, job, keyed=op.backend is not None))
    except BaseException:
        release(captures)
        raise
    return captures


async def finish_snapshot(
    captures: list[SnapshotCapture], *, index: int, key_groups: KeyGroupRange
) -> list[SnapshotFile]:
    """Finish the captured files (in worker threads) and describe each; the captures are
    released whatever happens."""
    files = []
    try:
        for capture in captures:
            if capture.job is not None:
                await anyio.to_thread.run_sync(capture.job.run)
            faults.reach("snapshot.writing")
            info = await anyio.to_thread.run_sync(file_info, capture.path)
            files.append(
                SnapshotFile(
                    uid=capture.spec.uid,
                    subtask=index,
                    file=capture.path.name,
                    size=info.size,
                    sha256=info.sha256,
                    key_groups=(key_groups.start, key_groups.end) if capture.keyed else None,
                )
            )
    finally:
        release(captures)
    return files


def release(captures: list[SnapshotCapture]) -> None:
    """Let go of what unfinished captures hold (a backend's pinned read)."""
    for capture in captures:
        if capture.job is not None:
            capture.job.finish()
