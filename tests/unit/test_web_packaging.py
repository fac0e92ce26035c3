"""The dashboard's files ship in the wheel: each file under the web package's static
directory matches the package-data globs of pyproject.toml (setuptools leaves out any
that does not, and an installed coordinator would serve a page without it)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STATIC = ROOT / "mesh" / "coordinator" / "web" / "static"


def test_every_static_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["mesh"]
    files = [p.relative_to(ROOT / "mesh").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {"coordinator/web/static/index.html"} <= set(files)
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, g) for g in globs)]
    assert missing == []


def test_the_page_loads_only_its_own_assets() -> None:
    """No CDN, no build step: the page names files of the static directory only."""
    page = (STATIC / "index.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert links, "the page links no script or style"
    for link in links:
        if link.startswith("data:") or link.startswith("#"):
            continue
        name = link.removeprefix("/").removeprefix("static/")
        assert link.lstrip("/").startswith("static/"), link
        assert (STATIC / name).is_file(), link
