"""Choosing and checking the checkpoint a job starts from."""

from __future__ import annotations

import logging
from pathlib import Path

from mesh.errors import CheckpointError
from mesh.graph.logical import LogicalGraph
from mesh.protocol.messages import RestoreSpec
from mesh.state.metadata import METADATA_FILE, CheckpointMetadata, latest_valid, load_metadata

__all__ = ["check_restore_point", "first_usable_restore", "resolve_restore"]

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
        operators={uid: list(op.files) for uid, op in metadata.operators.items()},
    )
    return spec, metadata


def check_restore_point(metadata: CheckpointMetadata, graph_uids: dict[str, int]) -> None:
    """Refuse a restore point the job cannot use (unknown operators, other key groups)."""
    unknown = sorted(set(metadata.operators) - set(graph_uids))
    if unknown:
        raise CheckpointError(
            f"the checkpoint has state for operator(s) {', '.join(map(repr, unknown))} that the "
            "job does not have (did a uid change? give operators stable .uid()s)"
        )
    for uid, op in metadata.operators.items():
        keyed = any(f.key_groups is not None for f in op.files)
        if keyed and op.max_parallelism != graph_uids[uid]:
            raise CheckpointError(
                f"operator {uid!r}: the checkpoint has {op.max_parallelism} key groups, the job "
                f"has max_parallelism {graph_uids[uid]}; they must match to restore keyed state"
            )


def first_usable_restore(candidates: list[str], graph: LogicalGraph) -> RestoreSpec | None:
    """The first of ``candidates`` (restore points, best first) that can be used; None
    if there are none. Raises CheckpointError naming why each one was refused."""
    problems = []
    for path in candidates:
        try:
            return resolve_restore(path, graph)[0]
        except CheckpointError as exc:
            problems.append(f"{path}: {exc}")
            log.warning("cannot restore from %s: %s", path, exc)
    if problems:
        raise CheckpointError("; ".join(problems))
    return None
