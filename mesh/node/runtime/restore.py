"""What each operator subtask gets back from the checkpoint a job restores.

Keyed state is redistributed by key group: a subtask reads the rows of its key-group
range from every snapshot file whose range overlaps it. Operator list state is dealt
out: source splits one by one (round robin), a sink's pending transactions whole per
old subtask (old subtask j's list goes to new subtask j mod parallelism), because they
must be committed in their order by one subtask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.graph.keygroups import key_group_range
from mesh.node.operators.base import RestoredState
from mesh.protocol.messages import RestoreSpec
from mesh.state.snapshot import SnapshotReader

__all__ = ["RestorePoint"]

# Operator list state restored whole per old subtask rather than element by element.
_DEALT_BY_OLD_SUBTASK = frozenset({"pending"})


class RestorePoint:
    """A checkpoint the job restores from, read once per operator."""

    def __init__(self, spec: RestoreSpec) -> None:
        self.spec = spec
        # Operator state by uid: (old subtask, lists by name) per snapshot file.
        self._operator_state: dict[str, list[tuple[int, dict[str, list[Any]]]]] = {}

    def state_for(
        self, uid: str, index: int, parallelism: int, max_parallelism: int
    ) -> RestoredState | None:
        """What operator ``uid``'s subtask ``index`` of ``parallelism`` gets back (None
        when the checkpoint has nothing for the operator)."""
        spec = self.spec
        if uid not in spec.operators:
            return None
        root = Path(spec.path)
        files = sorted(spec.operators[uid], key=lambda f: f.subtask)
        groups = key_group_range(index, parallelism, max_parallelism)
        keyed = [
            root / f.file
            for f in files
            if f.key_groups is not None
            and f.key_groups[0] < groups.end
            and groups.start < f.key_groups[1]
        ]
        per_file = self._operator_state.get(uid)
        if per_file is None:
            per_file = []
            for f in files:
                with SnapshotReader(root / f.file) as reader:
                    per_file.append((f.subtask, reader.operator_state()))
            self._operator_state[uid] = per_file
        everything: dict[str, list[Any]] = {}
        for _, state in per_file:
            for name, values in state.items():
                everything.setdefault(name, []).extend(values)
        mine = {}
        for name, values in everything.items():
            if name in _DEALT_BY_OLD_SUBTASK:
                mine[name] = [
                    v
                    for old, state in per_file
                    if old % parallelism == index
                    for v in state.get(name, [])
                ]
            else:
                mine[name] = values[index::parallelism]
        return RestoredState(
            checkpoint_id=spec.checkpoint_id,
            job_id=spec.job_id,
            keyed_files=keyed,
            key_groups=groups,
            operator_state=mine,
            all_operator_state=everything,
        )
