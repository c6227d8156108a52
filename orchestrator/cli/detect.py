"""What ``orch init`` finds in a repository: name, main branch, test and lint commands, context.

Detection reads the files committed on the main branch, since that is all a
cycle sees: the planner and the judge work in worktrees of main, where
uncommitted files do not exist. Every choice made leaves a note saying why,
for the person to check. Nothing here writes anything.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.adapters.git_commands import branches
from orchestrator.adapters.git_repo import GitRepo
from orchestrator.domain.errors import ConfigError, GitError

__all__ = ["Detection", "detect", "project_name"]

# The characters a project name may hold (config.py keeps names safe as file
# and Prefect deployment names); everything else becomes '-'.
_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_NPM_PLACEHOLDER = "no test specified"  # npm init's "echo \"Error: no test specified\" && exit 1"
_CONTEXT_NAMES = ("CLAUDE.md", "AGENTS.md")
_README_NAMES = ("README.md", "README.rst", "README")
# Vendored or generated trees whose test files are not the project's own.
_SKIP_DIRS = frozenset({"node_modules", ".venv", "venv", ".tox", ".nox", ".orch", "site-packages", "vendor"})
_ESLINT_FILES = tuple(f"eslint.config.{ext}" for ext in ("js", "mjs", "cjs", "ts", "mts", "cts")) + tuple(
    f".eslintrc{ext}" for ext in ("", ".js", ".cjs", ".json", ".yml", ".yaml"))
_MAKE_TEST = re.compile(r"^test\s*::?(?!=)", re.MULTILINE)


@dataclass
class Detection:
    """What was found in one repository: the portfolio entry and notes for people."""

    repo: Path
    """The repository's folder, absolute and resolved."""
    main: str
    """The branch merged work goes to."""
    entry: dict[str, Any]
    """The project's entry for the portfolio (its ``path`` is set when written)."""
    notes: list[str] = field(default_factory=list)
    tracked: frozenset[str] = frozenset()
    """Files committed on main."""

    @property
    def name(self) -> str:
        """The project's name."""
        return str(self.entry["name"])


def project_name(folder: str) -> str:
    """A valid project name from a folder name: disallowed characters become '-'."""
    name = _NOT_NAME.sub("-", folder).strip("-")
    return "project" if set(name) <= {"."} else name


class _Tree:
    """The files committed on main, read on demand."""

    def __init__(self, project: GitRepo) -> None:
        self._project = project
        self.files = frozenset(project.tree_files())
        self._texts: dict[str, str] = {}

    def has(self, name: str) -> bool:
        return name in self.files

    def text(self, name: str) -> str:
        if name not in self.files:
            return ""
        if name not in self._texts:
            try:
                self._texts[name] = self._project.show_file(name)
            except GitError:
                self._texts[name] = ""
        return self._texts[name]

    def section(self, name: str, section: str) -> bool:
        """Whether an INI-style file has a ``[section]`` header."""
        return re.search(rf"^\s*\[{re.escape(section)}\]\s*$", self.text(name), re.MULTILINE) is not None

    def toml_tool(self) -> dict[str, Any]:
        """pyproject.toml's ``[tool]`` table ({} if absent or not valid TOML)."""
        try:
            tool = tomllib.loads(self.text("pyproject.toml")).get("tool", {})
        except tomllib.TOMLDecodeError:
            return {}
        return tool if isinstance(tool, dict) else {}

    def package(self) -> dict[str, Any]:
        """package.json as a dict ({} if absent or not valid JSON)."""
        try:
            data = json.loads(self.text("package.json") or "{}")
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def scripts(self) -> dict[str, Any]:
        scripts = self.package().get("scripts")
        return scripts if isinstance(scripts, dict) else {}


def detect(path: Path, name: str | None = None) -> Detection:
    """Find a repository's name, main branch, test and lint commands and context files."""
    repo = _checkout(Path(path).expanduser())
    if name is not None and (not name or project_name(name) != name):
        raise ConfigError(f"--name {name!r} is not a valid project name: use only letters, "
                          "digits, '-', '_' and '.'")
    notes: list[str] = []
    # GitError here: not a repository, bare, or no commits.
    main, recorded = _main_branch(repo, *branches(repo), notes)
    tree = _Tree(GitRepo(repo, main))
    entry: dict[str, Any] = {"name": name or project_name(repo.name)}
    if recorded:
        entry["main_branch"] = main
    entry["test_command"] = _test_command(tree, repo, notes)
    entry["lint_command"] = _lint_command(tree, repo, notes)
    entry["planner_context_files"] = _context_files(tree, repo, main, notes)
    return Detection(repo=repo, main=main, entry=entry, notes=notes, tracked=tree.files)


def _checkout(path: Path) -> Path:
    """``path`` resolved, once known to be a folder; a hint when it is inside a repository."""
    if not path.exists():
        raise ConfigError(f"{path}: no such folder")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory; give the repository's folder")
    repo = path.resolve()
    bare = (repo / "HEAD").is_file() and (repo / "objects").is_dir()
    if not (repo / ".git").exists() and not bare:
        top = next((p for p in repo.parents if (p / ".git").exists()), None)
        if top is not None:
            raise ConfigError(f"{repo} is inside the git repository {top}, not its top folder: "
                              f"run `orch init {top}`")
    return repo


def _main_branch(repo: Path, names: set[str], current: str | None, notes: list[str]) -> tuple[str, bool]:
    """(the branch merged work goes to, whether the config must name it)."""
    # What the config picks when main_branch is unset (see GitRepo).
    auto = next((b for b in ("main", "master") if b in names), None)
    chosen = current if current in ("main", "master") else auto or current
    if chosen is None:
        raise ConfigError(f"{repo}: no main or master branch and HEAD is detached: check out the "
                          "branch that should receive merged work, then run `orch init` again")
    recorded = chosen != auto
    if recorded:
        notes.append(f"main branch {chosen!r}, the branch checked out: written as main_branch "
                     f"(by itself the config would pick {auto or 'no branch'!r})")
    if current and current != chosen:
        notes.append(f"your checkout is on {current!r}: merged work lands on {chosen!r}")
    return chosen, recorded


def _choose(what: str, candidates: list[tuple[str, str]], notes: list[str]) -> str:
    """The first candidate command; the others are mentioned."""
    if not candidates:
        return ""
    (command, why), *others = candidates
    notes.append(f"detected {why}: {what} `{command}`")
    if others:
        also = "; ".join(f"`{c}` ({w})" for c, w in others)
        notes.append(f"also found for {what}: {also}; edit {what} to use or combine them")
    program = shlex.split(command)[0]
    if not (Path(program).is_file() if "/" in program else shutil.which(program)):
        notes.append(f"`{program}` is not on PATH here: install it before the first cycle "
                     f"(a {what} that cannot run fails every branch)")
    return command


def _test_command(tree: _Tree, repo: Path, notes: list[str]) -> str:
    candidates = []
    python = _python_tests(tree, repo, notes)
    if python:
        candidates.append(python)
    script = tree.scripts().get("test")
    if isinstance(script, str) and _NPM_PLACEHOLDER in script:
        notes.append("package.json's test script is npm's placeholder (it only fails): not used")
    elif isinstance(script, str) and script.strip():
        candidates.append(("npm test", 'package.json\'s "test" script'))
    if tree.has("Cargo.toml"):
        candidates.append(("cargo test", "Cargo.toml"))
    if tree.has("go.mod"):
        candidates.append(("go test ./...", "go.mod"))
    makefile = next((m for m in ("GNUmakefile", "makefile", "Makefile") if _MAKE_TEST.search(tree.text(m))), None)
    if makefile:
        candidates.append(("make test", f"a test target in {makefile}"))
    command = _choose("test_command", candidates, notes)
    if command == "npm test":
        notes.append("npm runs in worktrees under .orch/worktrees and finds node_modules in your "
                     "checkout above them: run `npm install` in your checkout first")
    if not command:
        notes.append("no test command detected: test_command left empty, so the judge runs no tests "
                     "(only the AI review); set it before the first cycle")
    return command


def _pytest_config(tree: _Tree) -> str | None:
    """Where pytest is configured, if anywhere."""
    table = tree.toml_tool().get("pytest")
    if isinstance(table, dict):
        return "pyproject.toml [tool.pytest.ini_options]" if "ini_options" in table else "pyproject.toml [tool.pytest]"
    for name in ("pytest.ini", ".pytest.ini"):
        if tree.has(name):
            return name
    if tree.section("setup.cfg", "tool:pytest"):
        return "setup.cfg [tool:pytest]"
    if tree.section("tox.ini", "pytest"):
        return "tox.ini [pytest]"
    return next((f for f in sorted(tree.files, key=len) if PurePosixPath(f).name == "conftest.py" and _own(f)), None)


def _own(name: str) -> bool:
    """Whether a committed file belongs to the project (not a vendored or generated tree)."""
    return not any(part in _SKIP_DIRS for part in PurePosixPath(name).parts[:-1])


def _test_files(tree: _Tree) -> list[str]:
    """Python test files as pytest and unittest name them (test_*.py, test*.py, *_test.py)."""
    found = [f for f in tree.files if _own(f) and f.endswith(".py")
             and (PurePosixPath(f).name.startswith("test") or f.endswith("_test.py"))]
    return sorted(found, key=lambda f: (f.count("/"), f))


def _python_tests(tree: _Tree, repo: Path, notes: list[str]) -> tuple[str, str] | None:
    config, tests = _pytest_config(tree), _test_files(tree)
    if config is None and not tests:
        return None
    python = _interpreter(repo, notes)
    pytest, importable = f"{python} -m pytest -q", _importable(python, "pytest", repo)
    install = f"{python} cannot import pytest: install it (`{python} -m pip install pytest`)"
    if config:
        notes += [] if importable else [install]
        return pytest, f"pytest from {config}"
    example = f"{len(tests)} test file(s) such as {tests[0]}"
    if importable:
        return pytest, f"pytest: {example}, and {python} can import pytest"
    if any("unittest" in tree.text(f) for f in tests[:20]):
        return _unittest(python, tests, tree), f"unittest: {example}, using unittest, and no pytest configuration"
    notes.append(f"{install}; the test files do not use unittest")
    return pytest, f"pytest-style tests: {example}"


def _unittest(python: str, tests: list[str], tree: _Tree) -> str:
    """unittest's command: discovery enters only folders that are packages (hold __init__.py)."""
    def reachable(name: str) -> bool:
        parts = PurePosixPath(name).parts[:-1]
        return all(tree.has("/".join((*parts[: i + 1], "__init__.py"))) for i in range(len(parts)))

    tops = {PurePosixPath(f).parts[0] for f in tests}
    if not any(reachable(f) for f in tests) and len(tops) == 1:
        return f"{python} -m unittest discover -s {shlex.quote(tops.pop())} -q"
    return f"{python} -m unittest -q"


def _interpreter(repo: Path, notes: list[str]) -> str:
    """The repository's own virtualenv's python, else python3 (or python) from PATH."""
    for venv in (".venv", "venv"):
        python = repo / venv / "bin" / "python"
        if python.is_file() and os.access(python, os.X_OK):
            notes.append(f"Python: {python}, the repository's virtualenv; an absolute path because "
                         f"cycles run the tests in worktrees under .orch/worktrees, which have no {venv}/")
            if (repo / "src").is_dir():
                notes.append("with a src/ layout installed in editable mode, tests in a worktree import "
                             "your checkout's code: set pythonpath = [\"src\"] in pytest's configuration")
            return shlex.quote(str(python))
    name = next((n for n in ("python3", "python") if shutil.which(n)), "python3")
    notes.append(f"Python: {name} from PATH (no .venv/ or venv/ in the repository); put another "
                 "interpreter's absolute path in the commands if the tests need one")
    return name


def _importable(python: str, module: str, cwd: Path) -> bool:
    try:
        run = subprocess.run([*shlex.split(python), "-c", f"import {module}"], cwd=cwd,
                             capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


def _venv_tool(repo: Path, tool: str) -> str:
    """A Python tool from the repository's virtualenv when it has one, else by name."""
    for venv in (".venv", "venv"):
        path = repo / venv / "bin" / tool
        if path.is_file() and os.access(path, os.X_OK):
            return shlex.quote(str(path))
    return tool


def _lint_command(tree: _Tree, repo: Path, notes: list[str]) -> str:
    candidates = []
    ruff = "pyproject.toml [tool.ruff]" if "ruff" in tree.toml_tool() else next(
        (n for n in ("ruff.toml", ".ruff.toml") if tree.has(n)), None)
    if ruff:
        candidates.append((f"{_venv_tool(repo, 'ruff')} check .", f"ruff from {ruff}"))
    flake8 = ".flake8" if tree.has(".flake8") else next(
        (f"{n} [flake8]" for n in ("setup.cfg", "tox.ini") if tree.section(n, "flake8")), None)
    if flake8:
        candidates.append((_venv_tool(repo, "flake8"), f"flake8 from {flake8}"))
    # The project's own lint script knows its arguments better than a bare eslint.
    if isinstance(tree.scripts().get("lint"), str):
        candidates.append(("npm run lint", 'package.json\'s "lint" script'))
    eslint = next((n for n in _ESLINT_FILES if tree.has(n)), None)
    if eslint is None and "eslintConfig" in tree.package():
        eslint = 'package.json "eslintConfig"'
    if eslint:
        candidates.append(("npx eslint .", f"eslint from {eslint}"))
    golangci = next((n for n in (".golangci.yml", ".golangci.yaml", ".golangci.toml", ".golangci.json")
                     if tree.has(n)), None)
    if golangci:
        candidates.append(("golangci-lint run", f"golangci-lint from {golangci}"))
    command = _choose("lint_command", candidates, notes)
    if not command:
        notes.append("no lint tool configured: lint_command left empty")
    return command


def _context_files(tree: _Tree, repo: Path, main: str, notes: list[str]) -> list[str]:
    """CLAUDE.md, AGENTS.md and a README, in that order, as committed on main."""
    top = {name.lower(): name for name in tree.files if "/" not in name}
    chosen = [top[n.lower()] for n in _CONTEXT_NAMES if n.lower() in top]
    readme = next((top[n.lower()] for n in _README_NAMES if n.lower() in top), None)
    chosen += [readme] if readme else []
    wanted = _CONTEXT_NAMES if readme else (*_CONTEXT_NAMES, *_README_NAMES)
    uncommitted = [n for n in wanted if n.lower() not in top and (repo / n).is_file()]
    if uncommitted:
        notes.append(f"{', '.join(uncommitted)} not committed on {main}: the planner reads files from "
                     f"{main}; commit, then add to planner_context_files")
    if not chosen:
        notes.append("no CLAUDE.md, AGENTS.md or README on main: the planner has no context; write a "
                     "CLAUDE.md (what the project is, and a backlog list) and add it to planner_context_files")
    elif "claude.md" not in top:
        notes.append("no CLAUDE.md: with backlog_source claude_md (the default) the context files are the "
                     "backlog; a CLAUDE.md with a backlog list tells the planner what to work on")
    return chosen
