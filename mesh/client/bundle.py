"""Packing a job's code to ship it to the nodes.

A job file outside a package is shipped with the ``.py`` files in its directory (not
subdirectories). A job file inside a package (its directory has an ``__init__.py``) is
shipped with the whole top-level package. Either way its imports of its own modules
work on every node.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from mesh.api.loader import package_root
from mesh.errors import JobCodeError

__all__ = ["MAX_BUNDLE_BYTES", "make_bundle"]

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_SKIP_DIRS = {"__pycache__", ".git", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def make_bundle(job_file: str | Path) -> tuple[bytes, str]:
    """Zip the job's code; returns the archive and the job file's path inside it."""
    path = Path(job_file).resolve()
    if not path.is_file():
        raise JobCodeError(f"job file not found: {job_file}")
    root = package_root(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if root == path.parent and not (root / "__init__.py").exists():
            # A lone job file: ship it with the Python files beside it (it may import them).
            for file in sorted(root.glob("*.py")):
                archive.write(file, file.name)
        else:
            package = path.relative_to(root).parts[0]
            for file in sorted((root / package).rglob("*")):
                if file.is_file() and not _SKIP_DIRS.intersection(file.relative_to(root).parts):
                    archive.write(file, file.relative_to(root).as_posix())
    data = buffer.getvalue()
    if len(data) > MAX_BUNDLE_BYTES:
        raise JobCodeError(
            f"job code bundle is {len(data) // 1024 // 1024} MiB, more than the "
            f"{MAX_BUNDLE_BYTES // 1024 // 1024} MiB allowed; keep data files out of the "
            "job's package and read them through a source"
        )
    return data, path.relative_to(root).as_posix()
