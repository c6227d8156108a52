"""Running git: every command through GitPython's command wrapper (real git, no shell).

With :mod:`orchestrator.adapters.git_repo`, the only module that imports
GitPython. A failing command becomes one :class:`GitError` line naming the
folder, the command and git's own message, with a hint where one helps.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.adapters.timing import span
from orchestrator.domain.errors import GitError

# Works without the user's git identity or signing key; hooks are not ours to run.
IDENTITY = ["user.name=orchestrator", "user.email=orchestrator@localhost", "commit.gpgsign=false"]
_HINTS = (
    (".lock", "another git process may be running; if none is, delete the stale lock file"),
    ("terminal prompts disabled", "git must reach the remote without a password prompt"),
    ("could not read from remote", "check the remote's URL and credentials"),
    ("permission denied", "check the permissions of the repository's files"),
)


def _describe(cmd: str, args: tuple[str, ...]) -> str:
    """The command as shown in messages: no commit messages, nothing long."""
    shown, skip = [cmd], False
    for arg in args:
        shown.append("…" if skip else arg if len(arg) <= 60 else arg[:57] + "...")
        skip = arg == "-m"
    return "git " + " ".join(shown).replace("\n", " ")


def _error(
    cwd: Path, cmd: str, args: tuple[str, ...], stderr: str, stdout: str, status: object
) -> GitError:
    """One line: folder, command, git's first (error) line, and a hint when obvious."""
    lines = [ln.strip() for ln in (stderr or stdout or "").splitlines() if ln.strip()]
    detail = next(
        (ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[0] if lines else ""
    )
    message = f"{cwd}: {_describe(cmd, args)} failed: {detail or f'exit status {status}'}"
    hint = next((h for key, h in _HINTS if key in detail.lower()), None)
    return GitError(f"{message}; {hint}" if hint else message)


def run(
    cwd: Path,
    cmd: str,
    *args: str,
    config: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> str:
    """Run ``git [-c config]... cmd args`` in ``cwd`` and return its stdout."""
    return str(_call(cwd, cmd, args, config, env, timeout_s, as_text=True))


def run_bytes(cwd: Path, cmd: str, *args: str, config: list[str] | None = None) -> bytes:
    """:func:`_git`, with stdout as raw bytes (for content that need not be UTF-8)."""
    out = _call(cwd, cmd, args, config, None, None, as_text=False)
    return out if isinstance(out, bytes) else str(out).encode()


def _call(
    cwd: Path,
    cmd: str,
    args: tuple[str, ...],
    config: list[str] | None,
    env: dict[str, str] | None,
    timeout_s: float | None,
    as_text: bool,
) -> object:
    """Run a git command; its stdout as GitPython gives it (text, or bytes unless ``as_text``)."""
    import git  # here: orch status and orch tasks run no git, and GitPython takes 50 ms to import

    runner = git.Git(str(cwd))
    if config:
        runner = runner(c=config)
    try:
        with span("git", cmd):
            return getattr(runner, cmd.replace("-", "_"))(
                *args, env=env, kill_after_timeout=timeout_s, stdout_as_string=as_text
            )
    except git.GitCommandError as exc:
        raise _error(cwd, cmd, args, _raw(exc.stderr), _raw(exc.stdout), exc.status) from exc
    except git.CommandError as exc:  # git missing, or cwd gone
        raise GitError(f"{cwd}: {_describe(cmd, args)} could not start: {exc.status}") from exc


def status(cwd: Path, cmd: str, *args: str) -> int:
    """Exit status of a git command used as a question (is-ancestor, verify)."""
    import git

    runner = git.Git(str(cwd))
    try:
        with span("git", cmd):
            code, _, err = getattr(runner, cmd.replace("-", "_"))(
                *args, with_extended_output=True, with_exceptions=False
            )
    except git.CommandError as exc:
        raise GitError(f"{cwd}: {_describe(cmd, args)} could not start: {exc.status}") from exc
    if code not in (0, 1):
        raise _error(cwd, cmd, args, str(err), "", code)
    return int(code)


def _raw(text: str) -> str:
    """GitPython decorates captured output as "\\n  stderr: '...'"; undo that."""
    for prefix in ("\n  stderr: '", "\n  stdout: '"):
        if text.startswith(prefix) and text.endswith("'"):
            return text[len(prefix) : -1]
    return text


def names_of(out: str) -> list[str]:
    """Paths from ``-z`` output."""
    return [name for name in out.split("\0") if name]


def init_repo(path: Path, files: dict[str, str], message: str = "initial commit") -> None:
    """Create a repository on branch main holding ``files`` in one commit."""
    path.mkdir(parents=True, exist_ok=True)
    run(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    run(path, "add", "-A")
    run(path, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, config=IDENTITY)


def branches(path: Path) -> tuple[set[str], str | None]:
    """(local branch names, the branch checked out or None when HEAD is detached) of a checkout.

    GitError when ``path`` is missing, not a repository itself (its parents are
    not searched), bare, or has no commits yet.
    """
    import git

    path = Path(path).absolute()
    try:
        repo = git.Repo(path)
    except git.NoSuchPathError as exc:
        raise GitError(f"{path}: no such folder; check the project's path") from exc
    except git.InvalidGitRepositoryError as exc:
        raise GitError(f"{path}: not a git repository; run `git init` there") from exc
    with repo:
        if repo.bare:
            raise GitError(f"{path}: bare repository; point the project at a checkout")
        names = {head.name for head in repo.heads}
        current = None if repo.head.is_detached else repo.head.reference.name
    if not names:
        raise GitError(f"{path}: repository has no commits: make a first commit")
    return names, current


def rebasing(repo: Path, branch: str) -> bool:
    """Whether someone is rebasing ``branch`` in ``repo`` (HEAD detached, the branch about to be rewritten)."""
    for state in ("rebase-merge", "rebase-apply"):
        head_name = repo / run(repo, "rev-parse", "--git-path", f"{state}/head-name")
        if head_name.is_file() and head_name.read_text().strip() == f"refs/heads/{branch}":
            return True
    return False


def changes_in_the_way(repo: Path, checkout: Path, old: str, new: str) -> list[str]:
    """Paths a fast-forward old..new would touch that have local changes in ``checkout``."""
    touched = set(names_of(run(repo, "diff", "--name-only", "-z", "--no-renames", old, new)))
    porcelain = run(checkout, "status", "--porcelain", "-z", "--untracked-files=all")
    dirty: set[str] = set()
    fields = iter(porcelain.split("\0"))
    for field in fields:  # "XY path", and for a rename or copy its source next
        if len(field) > 3:
            dirty.add(field[3:])
            if field[0] in "RC":
                dirty.add(next(fields, ""))
    # Ignored files are not in the status, and git overwrites them silently.
    added = names_of(run(repo, "diff", "--name-only", "-z", "--diff-filter=A", old, new))
    dirty |= {p for p in added if (checkout / p).exists() or (checkout / p).is_symlink()}
    return sorted(touched & dirty)
