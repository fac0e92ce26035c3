"""Unpacking a job's code bundle on a node."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from mesh.errors import JobCodeError

__all__ = ["extract_bundle"]


def extract_bundle(bundle: bytes, target: Path) -> None:
    """Unzip ``bundle`` into ``target``; refuses entries that would land outside it."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(bundle))
    except zipfile.BadZipFile as exc:
        raise JobCodeError(f"job code bundle is not a zip archive: {exc}") from None
    root = target.resolve()
    with archive:
        for info in archive.infolist():
            destination = (root / info.filename).resolve()
            if not destination.is_relative_to(root):
                raise JobCodeError(f"job code bundle entry escapes its directory: {info.filename}")
        target.mkdir(parents=True, exist_ok=True)
        archive.extractall(root)
