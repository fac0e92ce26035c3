"""``_metadata.json``: what a checkpoint holds, written last, by atomic rename.

A checkpoint directory is usable only if its ``_metadata.json`` exists, parses, and
every file it lists is there with the listed size and sha256. ``load_metadata`` checks
all of that and names the file at fault; ``latest_valid`` walks a job's checkpoints
newest first and skips (with a reason) any that fail the check.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from mesh.errors import CheckpointError
from mesh.protocol.messages import SnapshotFile
from mesh.protocol.states import CheckpointKind
from mesh.state.files import fsync_dir, sha256_file

__all__ = [
    "METADATA_FILE",
    "CheckpointMetadata",
    "OperatorFiles",
    "latest_valid",
    "load_metadata",
    "write_metadata",
]

METADATA_FILE = "_metadata.json"
_FORMAT_VERSION = 1
_CHECKPOINT_DIR = re.compile(r"^chk-(\d+)$")


@dataclass(frozen=True, slots=True)
class OperatorFiles:
    """The snapshot files of one operator (by uid)."""

    parallelism: int
    max_parallelism: int
    files: tuple[SnapshotFile, ...]


@dataclass(frozen=True, slots=True)
class CheckpointMetadata:
    """Everything needed to restore from a checkpoint or savepoint."""

    job_id: str
    job_name: str
    checkpoint_id: int
    kind: CheckpointKind
    created_ms: int
    operators: dict[str, OperatorFiles] = field(default_factory=dict)
    version: int = _FORMAT_VERSION

    @property
    def size(self) -> int:
        """Bytes of state in all files."""
        return sum(f.size for op in self.operators.values() for f in op.files)

    def to_json(self) -> bytes:
        """The JSON form written to ``_metadata.json``."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes, origin: str) -> CheckpointMetadata:
        """Parse ``_metadata.json``; raises CheckpointError naming ``origin``."""
        try:
            raw = orjson.loads(data)
            if raw.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported format version {raw.get('version')!r}")
            operators = {
                uid: OperatorFiles(
                    parallelism=int(op["parallelism"]),
                    max_parallelism=int(op["max_parallelism"]),
                    files=tuple(
                        SnapshotFile(
                            uid=uid,
                            subtask=int(f["subtask"]),
                            file=str(f["file"]),
                            size=int(f["size"]),
                            sha256=str(f["sha256"]),
                            key_groups=_pair(f.get("key_groups")),
                        )
                        for f in op["files"]
                    ),
                )
                for uid, op in raw["operators"].items()
            }
            return cls(
                job_id=str(raw["job_id"]),
                job_name=str(raw["job_name"]),
                checkpoint_id=int(raw["checkpoint_id"]),
                kind=CheckpointKind(raw["kind"]),
                created_ms=int(raw["created_ms"]),
                operators=operators,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{origin} is not valid checkpoint metadata: {exc}") from None


def _pair(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"key_groups must be [start, end], got {value!r}")
    return int(value[0]), int(value[1])


def write_metadata(directory: Path, metadata: CheckpointMetadata) -> Path:
    """Write ``_metadata.json`` atomically (temp file, fsync, rename, fsync the directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / METADATA_FILE
    temp = directory / f".{METADATA_FILE}.tmp"
    with open(temp, "wb") as f:
        f.write(metadata.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, target)
    fsync_dir(directory)
    return target


def load_metadata(directory: Path, *, verify: bool = True) -> CheckpointMetadata:
    """Read a checkpoint's metadata; with ``verify``, check every file's size and sha256.

    Raises CheckpointError naming the missing or damaged file.
    """
    meta_path = directory / METADATA_FILE
    try:
        data = meta_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is not a complete checkpoint: {METADATA_FILE} is missing"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {meta_path}: {exc}") from None
    metadata = CheckpointMetadata.from_json(data, str(meta_path))
    if verify:
        for uid, op in metadata.operators.items():
            for f in op.files:
                path = directory / f.file
                if not path.is_file():
                    raise CheckpointError(
                        f"checkpoint {directory}: file {f.file} (operator {uid!r}, subtask "
                        f"{f.subtask}) is missing"
                    )
                size = path.stat().st_size
                if size != f.size:
                    raise CheckpointError(
                        f"checkpoint {directory}: file {f.file} has {size} bytes, the "
                        f"metadata says {f.size}"
                    )
                if sha256_file(path) != f.sha256:
                    raise CheckpointError(
                        f"checkpoint {directory}: file {f.file} has the wrong checksum "
                        "(it was changed after the checkpoint was taken)"
                    )
    return metadata


def latest_valid(job_directory: Path) -> tuple[Path, CheckpointMetadata, list[str]]:
    """The newest usable ``chk-<n>`` under ``job_directory``, with why newer ones were skipped.

    Raises CheckpointError if there is none.
    """
    candidates = []
    if job_directory.is_dir():
        for entry in job_directory.iterdir():
            match = _CHECKPOINT_DIR.match(entry.name)
            if match and entry.is_dir():
                candidates.append((int(match.group(1)), entry))
    skipped: list[str] = []
    for _, directory in sorted(candidates, reverse=True):
        try:
            return directory, load_metadata(directory), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    reason = f" (skipped: {'; '.join(skipped)})" if skipped else ""
    raise CheckpointError(f"no usable checkpoint under {job_directory}{reason}")
