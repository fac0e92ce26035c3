"""Job code loading: each job's modules are its own, and bundles carry what a job imports."""

from __future__ import annotations

import io
import textwrap
import zipfile
from pathlib import Path

from mesh.api.loader import load_job
from mesh.client.bundle import make_bundle


def make_project(root: Path, version: str) -> Path:
    package = root / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(f"VERSION = {version!r}\n")
    job = package / "job.py"
    job.write_text(
        textwrap.dedent(
            """
            from mesh import Job, sinks, sources
            from pkg import helpers

            def tag(record):
                return {"record": record, "version": helpers.VERSION}

            job = Job("versioned")
            job.source(sources.Collection([1])).map(tag).sink(sinks.Collect())
            """
        )
    )
    return job


def tag_function(job_file: Path):
    job = load_job(job_file)
    built = job.build()
    return built.operator(1).fn


def test_two_jobs_with_the_same_package_names_keep_their_own_code(tmp_path: Path) -> None:
    one = tag_function(make_project(tmp_path / "one", "one"))
    two = tag_function(make_project(tmp_path / "two", "two"))
    again = tag_function(make_project(tmp_path / "three", "three"))
    assert one(1)["version"] == "one"
    assert two(1)["version"] == "two"
    assert again(1)["version"] == "three"


def test_a_lone_job_file_ships_the_modules_beside_it(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "job.py").write_text("import helpers\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.py").write_text("# not shipped: only the job's directory\n")
    bundle, entry = make_bundle(tmp_path / "job.py")
    names = zipfile.ZipFile(io.BytesIO(bundle)).namelist()
    assert entry == "job.py"
    assert sorted(names) == ["helpers.py", "job.py"]


def test_a_packaged_job_ships_its_top_level_package(tmp_path: Path) -> None:
    job_file = make_project(tmp_path, "v")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "unrelated.py").write_text("")
    bundle, entry = make_bundle(job_file)
    names = zipfile.ZipFile(io.BytesIO(bundle)).namelist()
    assert entry == "pkg/job.py"
    assert sorted(names) == ["pkg/__init__.py", "pkg/helpers.py", "pkg/job.py"]
