"""Import a job file in a fresh module namespace and find its ``Job``.

Used by the client (to build the graph it submits) and by every node (to rebuild the
same graph and find the user's functions). Each import gets its own module name, so two
jobs — or two attempts of one job — never share module state.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import traceback
from pathlib import Path

from mesh.api.job import Job
from mesh.errors import JobCodeError

__all__ = ["find_job", "import_job_file", "load_job", "package_root"]

_counter = itertools.count()


def package_root(job_file: Path) -> Path:
    """Where the job's imports resolve: the parent of its top-level package, if the file
    is inside a package (directories with ``__init__.py``), else the file's directory."""
    directory = job_file.resolve().parent
    if not (directory / "__init__.py").exists():
        return directory
    while (directory.parent / "__init__.py").exists():
        directory = directory.parent
    return directory.parent


def _top_level_names(root: Path) -> set[str]:
    """Modules and packages importable from ``root``: what a job's code may provide."""
    names = set()
    for entry in root.iterdir():
        if entry.suffix == ".py" and entry.is_file():
            names.add(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").exists():
            names.add(entry.name)
    return names


def import_job_file(path: str | Path, *, search_root: str | Path | None = None) -> object:
    """Execute the job file as a new module and return it.

    ``search_root`` (the directory holding the job's package, if any) is put first on
    ``sys.path`` while the file runs, so ``import mypkg.helpers`` works.

    The job's own modules are imported fresh every time: modules of the same names that
    another job (or an earlier import) loaded are set aside while this file runs and put
    back afterwards, so each job's functions use its own code. (An import inside a
    function at run time still goes through the shared ``sys.modules``.)
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise JobCodeError(f"job file not found: {path}")
    module_name = f"mesh_job_{next(_counter)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise JobCodeError(f"cannot import job file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    root_path = Path(search_root).resolve() if search_root is not None else package_root(path)
    root = str(root_path)
    provided = _top_level_names(root_path)
    set_aside = {
        name: mod for name, mod in sys.modules.items() if name.partition(".")[0] in provided
    }
    for name in set_aside:
        del sys.modules[name]
    sys.path.insert(0, root)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        sys.modules.pop(module_name, None)
        raise JobCodeError(
            f"job file {path} called exit({exc.code}) while being imported"
        ) from None
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if not isinstance(exc, Exception):
            raise
        tb = "".join(traceback.format_exception(exc))
        raise JobCodeError(f"job file {path} raised while being imported:\n{tb}") from exc
    finally:
        try:
            sys.path.remove(root)
        except ValueError:
            pass
        sys.modules.update(set_aside)  # another job's modules win the shared names back
    return module


def find_job(module: object, name: str | None = None, *, origin: str = "job file") -> Job:
    """The module-level ``Job`` of ``module`` (by job name when there are several)."""
    jobs: list[Job] = []
    for value in vars(module).values():
        if isinstance(value, Job) and all(value is not j for j in jobs):
            jobs.append(value)
    if name is not None:
        matching = [j for j in jobs if j.name == name]
        if not matching:
            found = ", ".join(repr(j.name) for j in jobs) or "none"
            raise JobCodeError(f"{origin} has no Job named {name!r} (found: {found})")
        return matching[0]
    if not jobs:
        raise JobCodeError(
            f"{origin} defines no Job at module level; create one with job = mesh.Job(...)"
        )
    if len(jobs) > 1:
        names = ", ".join(repr(j.name) for j in jobs)
        raise JobCodeError(f"{origin} defines several jobs ({names}); pick one with --job NAME")
    return jobs[0]


def load_job(
    path: str | Path, name: str | None = None, *, search_root: str | Path | None = None
) -> Job:
    """Import ``path`` and return its ``Job``."""
    module = import_job_file(path, search_root=search_root)
    return find_job(module, name, origin=f"job file {path}")
