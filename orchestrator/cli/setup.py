"""The ``orch`` commands that set a user up: ``init`` and ``doctor``.

``init`` detects a repository's settings (:mod:`orchestrator.cli.detect`) and
writes them into a portfolio file: a new one, or with ``--add`` an existing
one. Nothing is written until the whole portfolio has validated; then the
file is replaced atomically. ``doctor`` checks the machine and the portfolio
(:mod:`orchestrator.cli.doctor`). main.py registers these functions as commands.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from orchestrator.adapters.git_repo import GitRepo
from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.cli.detect import Detection, detect
from orchestrator.cli.doctor import diagnose
from orchestrator.cli.read import ConfigOpt
from orchestrator.domain.config import ProjectConfig, portfolio_from_dict
from orchestrator.domain.errors import ConfigError, GitError

DEFAULT_CONFIG = Path("orch.json")
"""The portfolio file ``orch init`` writes when no --config is given (``orch`` finds it there)."""

console = Console()

_MARK_STYLES = {"✓": "green", "✗": "red", "!": "yellow"}


def init(path: Annotated[str | None, typer.Argument(metavar="PATH", help="The project's git repository (default: the current folder).", show_default=False)] = None,
         config: Annotated[str | None, typer.Option("--config", "-c", help="Portfolio file to write (default: ./orch.json).")] = None,
         add: Annotated[bool, typer.Option("--add", help="Add the project to an existing portfolio file.")] = False,
         name: Annotated[str | None, typer.Option("--name", help="Project name (default: the folder's name).")] = None) -> None:
    """Detect a repository's main branch, test and lint commands, and write a portfolio file for it."""
    result = init_portfolio(Path(path) if path is not None else Path.cwd(),
                            Path(config) if config is not None else None, add, name)
    _print_init(result, config if config is not None else str(DEFAULT_CONFIG))


@dataclass
class InitResult:
    """What ``orch init`` wrote."""

    detection: Detection
    config: Path
    added: bool
    """True when the project joined an existing portfolio."""
    data_dir: str
    """The portfolio's ``data_dir`` as written in the file."""


def init_portfolio(repo: Path, config: Path | None = None, add: bool = False,
                   name: str | None = None) -> InitResult:
    """Detect ``repo`` and write it into a new portfolio file, or with ``add`` append it to one.

    Raises ConfigError or GitError, with nothing written, on any problem.
    """
    target = (config or DEFAULT_CONFIG).expanduser().absolute()
    if target.is_symlink():
        target = target.resolve()  # replace the file it points to, keeping the link
    existing, known = _existing(target, add)
    detection = detect(repo, name)
    entry = dict(detection.entry)
    entry = {"name": entry.pop("name"), "path": _relative(detection.repo, target.parent.resolve()), **entry}
    if existing is None:
        data_dir = _data_dir(detection.repo, target.parent.resolve())
        if ".orch" in Path(data_dir).parts:
            detection.notes.append(f"data_dir {data_dir}: the config is inside the repository, so the "
                                   "state goes in its .orch/ folder, which git ignores and cleanup leaves "
                                   "alone (only .orch/worktrees is ever removed)")
        data: dict[str, Any] = {"name": entry["name"], "data_dir": data_dir, "projects": [entry]}
    else:
        data = existing
        data_dir = str(data.get("data_dir", "./data"))
        _check_new(detection, target, known)
        data.setdefault("projects", []).append(entry)
    portfolio = portfolio_from_dict(data, target)  # validated before anything is written
    _write_atomic(target, data)
    _exclude(detection, target, portfolio.data_dir)
    return InitResult(detection=detection, config=target, added=existing is not None, data_dir=data_dir)


def _existing(target: Path, add: bool) -> tuple[dict[str, Any] | None, list[ProjectConfig]]:
    """The portfolio to add to, as raw JSON (values stay as the user wrote them), and its projects.

    (None, []) for a new file.
    """
    if not add:
        if target.exists() or target.is_symlink():
            raise ConfigError(f"{target} already exists: use --add to add the project to it, "
                              "or --config to write another file")
        if not target.parent.is_dir():
            raise ConfigError(f"{target.parent}: no such folder for the config file")
        return None, []
    portfolio = load_portfolio(target)  # it must be a valid portfolio as it is
    data = json.loads(target.read_text(encoding="utf-8"))
    return data, portfolio.projects


def _check_new(detection: Detection, target: Path, known: list[ProjectConfig]) -> None:
    """Refuse a second project of the same name or folder."""
    for project in known:
        if project.name == detection.name:
            raise ConfigError(f"{target}: there is a project named {detection.name!r} already; "
                              "choose another with --name")
        if project.path.resolve() == detection.repo:
            raise ConfigError(f"{target}: project {project.name!r} already has the path {detection.repo}")


def _relative(repo: Path, folder: Path) -> str:
    """The project's path relative to the config's folder when it is under it, else absolute."""
    return os.path.relpath(repo, folder) if repo.is_relative_to(folder) else str(repo)


def _data_dir(repo: Path, folder: Path) -> str:
    """``./data`` beside the config, unless that is inside the repository: then ``.orch/data`` in it.

    ``.orch/`` is git-excluded, and nothing that cleans up (patrol, worktree
    removal) touches more of it than ``.orch/worktrees``.
    """
    if folder.is_relative_to(repo) or (folder / "data").is_relative_to(repo):
        return os.path.relpath(repo / ".orch" / "data", folder)
    return "./data"


def _exclude(detection: Detection, target: Path, data_dir: Path) -> None:
    """Keep the config file and a data dir inside the repository out of ``git status``."""
    repo, notes = detection.repo, detection.notes
    patterns = [".orch/"] if data_dir.is_relative_to(repo / ".orch") else []
    if data_dir.is_relative_to(repo) and not patterns:
        notes.append(f"data_dir {data_dir} is inside {repo}: git shows it as untracked files")
    config = target.resolve()
    if config.is_relative_to(repo) and not config.is_relative_to(repo / ".orch"):
        relative = config.relative_to(repo).as_posix()
        if relative in detection.tracked:
            notes.append(f"{relative} is committed in the repository: an agent's branch could change "
                         "it and a merge would change your config; keep it untracked")
        patterns.append(f"/{relative}")
    if not patterns:
        return
    try:
        project = GitRepo(repo, detection.main)
        for pattern in patterns:
            project.exclude(pattern)
    except (GitError, OSError) as exc:
        notes.append(f"could not list {', '.join(patterns)} in .git/info/exclude: {exc}")
        return
    notes.append(f"listed {', '.join(patterns)} in .git/info/exclude: git status stays clean, and "
                 "untracked files stop main from advancing only if a merge would write the same path")


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path`` and move it into place."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # A new file gets the umask's mode; an existing one keeps its own.
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _print_init(result: InitResult, config: str) -> None:
    found = result.detection
    entry = found.entry
    rows = [
        ("main branch", found.main + ("" if "main_branch" in entry else " (found by the config itself)")),
        ("test_command", entry["test_command"] or "(none)"),
        ("lint_command", entry["lint_command"] or "(none)"),
        ("context files", ", ".join(entry["planner_context_files"]) or "(none)"),
    ]
    _plain(f"Project {found.name} in {found.repo}")
    for label, value in rows:
        _plain(f"  {label + ':':<15} {value}")
    _plain("Notes:" if found.notes else "Notes: none")
    for note in found.notes:
        _plain(f"  - {note}")
    if result.added:
        _plain(f"Added {found.name} to {result.config}")
    else:
        _plain(f"Wrote {result.config} (a new portfolio; data_dir {result.data_dir})")
    shown = shlex.quote(config)
    _plain("Next:")
    _plain(f"  orch doctor --config {shown}")
    _plain(f"  orch doctor --config {shown} --run-tests   # test_command on {found.main}, in a worktree")
    _plain(f"  orch run --project {found.name} --config {shown}")


def doctor(config: ConfigOpt = None,
           run_tests: Annotated[bool, typer.Option("--run-tests", help="Also run each enabled project's test and lint commands on its main branch, in a temporary worktree.")] = False) -> None:
    """Check this machine and the portfolio before a first cycle; exit 1 if a check fails."""
    failed = total = 0
    for diagnosis in diagnose(config, run_tests):
        total += 1
        failed += not diagnosis.ok
        line = diagnosis.line()
        console.print(Text.assemble((line[0], _MARK_STYLES[diagnosis.mark]), line[1:]), soft_wrap=True)
    if failed:
        _plain(f"{failed} of {total} checks failed.")
        raise typer.Exit(1)
    _plain(f"All {total} checks passed.")


def _plain(text: str) -> None:
    # Paths, commands and TOML table names such as [tool.ruff] are not Rich markup.
    console.print(text, markup=False, highlight=False, soft_wrap=True)
