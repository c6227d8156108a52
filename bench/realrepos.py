"""Real open-source projects, from the snapshots in ``../shared/realrepos``, as git projects.

Figures on generated projects flatter: their tests take a tenth of a
second. The snapshots are ``git archive`` tarballs of real projects with
their own test suites (that folder's README lists them). Nothing needs
them: when they are missing, :func:`make_toolz` returns None and the
caller goes on with generated projects, saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.git_commands import init_repo

from .project import Layout

FOLDER_ENV = "ORCH_REALREPOS"
"""Where the snapshots are, when not in ``shared/realrepos`` next to this checkout."""
TOOLZ_ARCHIVE = "toolz-568c2b8.tar.gz"
_PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"
TOOLZ = Layout(
    module="toolz/soak_{i}.py", test="toolz/tests/test_soak_{i}.py", imports="toolz.soak_{i}",
    readme="README.rst", test_command=_PYTEST,
    # As shipped, one test fails unless toolz is installed; main stays as green as that.
    green_command=f"{_PYTEST} --deselect toolz/tests/test_package.py::test_has_version",
)
"""toolz (pytoolz/toolz): 186 tests, about 3 s on this machine's two cores."""


def folder() -> Path | None:
    """The folder of snapshots, or None when this machine has none."""
    chosen = os.environ.get(FOLDER_ENV)
    path = Path(chosen) if chosen else Path(__file__).resolve().parents[2] / "shared" / "realrepos"
    return path if path.is_dir() else None


def make_toolz(root: Path) -> Path | None:
    """toolz as a git project on main at ``root/toolz``, or None when its snapshot is missing."""
    found = folder()
    archive = found / TOOLZ_ARCHIVE if found else None
    if archive is None or not archive.is_file():
        return None
    with tarfile.open(archive) as tar:  # one top folder, toolz/
        tar.extractall(root, filter="data")
    path = root / "toolz"
    init_repo(path, {}, message="toolz 568c2b8, from its snapshot")
    return path


@dataclass(frozen=True)
class RealProject:
    """A real project a benchmark cycle runs on: where its steps go, and how it is copied in."""

    name: str
    layout: Layout
    make: Callable[[Path], Path]
    """Puts a git project on main under the folder given; returns its path."""


def toolz() -> RealProject | None:
    """toolz from its snapshot, or None when this machine has no snapshots."""
    found = folder()
    if found is None or not (found / TOOLZ_ARCHIVE).is_file():
        return None
    return RealProject("toolz", TOOLZ, lambda root: make_toolz(root) or root)


def from_repo(repo: Path, test_command: str, test_dir: str = "") -> RealProject:
    """Any git repository (its main branch, cloned: the original is not touched), with its own test command.

    The tasks add a module at the top of the tree and its unittest test in
    ``test_dir`` (default: the top, where ``pytest`` and ``python -m unittest``
    look unless the project's configuration points them elsewhere).
    """
    if not (repo / ".git").exists():
        raise SystemExit(f"--repo {repo}: not a git repository")
    if test_dir and not (repo / test_dir).is_dir():
        raise SystemExit(f"--test-dir {test_dir}: no such folder in {repo}")
    readme = next((n for n in ("README.md", "README.rst", "README.txt", "README") if (repo / n).is_file()), "")
    test = f"{test_dir.strip('/')}/test_orch_bench_{{i}}.py" if test_dir else "test_orch_bench_{i}.py"
    # A worker runs its own step's test, not the whole suite (which may take minutes).
    layout = Layout(module="orch_bench_{i}.py", test=test, imports="orch_bench_{i}",
                    readme=readme or ".gitignore", test_command=test_command, green_command=test_command,
                    worker_test=f"{sys.executable} -m unittest -q {test}")

    def make(root: Path) -> Path:
        path = root / repo.resolve().name
        subprocess.run(["git", "clone", "--quiet", str(repo.resolve()), str(path)], check=True)
        subprocess.run(["git", "-C", str(path), "checkout", "--quiet", "-B", "main"], check=True)
        return path

    return RealProject(repo.resolve().name, layout, make)
