"""Choosing and checking the checkpoint a job starts from."""

from __future__ import annotations

import logging
from pathlib import Path

from mesh.coordinator.checkpoints import check_restore_point
from mesh.errors import CheckpointError
from mesh.graph.logical import LogicalGraph
from mesh.protocol.messages import RestoreFile, RestoreSpec
from mesh.state.metadata import METADATA_FILE, CheckpointMetadata, latest_valid, load_metadata

__all__ = ["resolve_restore"]

log = logging.getLogger("mesh.coordinator.restore")


def resolve_restore(path: str, graph: LogicalGraph) -> tuple[RestoreSpec, CheckpointMetadata]:
    """The restore point at ``path``: a savepoint or checkpoint directory (used as is, and
    refused if damaged), or a job's checkpoint directory (its newest usable ``chk-<n>``;
    damaged newer ones are skipped with a warning naming the file).
    """
    root = Path(path)
    if (root / METADATA_FILE).exists():
        directory, metadata = root, load_metadata(root)
    elif root.is_dir():
        directory, metadata, skipped = latest_valid(root)
        for reason in skipped:
            log.warning("skipping a damaged checkpoint: %s", reason)
    else:
        raise CheckpointError(f"no savepoint or checkpoint at {path}")
    check_restore_point(metadata, {op.uid: op.max_parallelism for op in graph.operators})
    spec = RestoreSpec(
        path=str(directory.resolve()),
        checkpoint_id=metadata.checkpoint_id,
        job_id=metadata.job_id,
        operators={
            uid: [
                RestoreFile(
                    subtask=f.subtask,
                    file=f.file,
                    key_groups=list(f.key_groups) if f.key_groups is not None else None,
                )
                for f in op.files
            ]
            for uid, op in metadata.operators.items()
        },
    )
    return spec, metadata
