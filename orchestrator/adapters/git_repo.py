"""Git operations on a user's project: worktrees, commits, merges, main.

The only module that imports GitPython. Nothing here checks out, resets or
merges in the user's own working tree: workers, the judge and the refinery
work in worktrees under ``.orch/worktrees``. Main moves only by fast-forward,
and only when that cannot touch the user's uncommitted changes.

Every command goes through GitPython's command wrapper (real git, no shell);
a failing command becomes one :class:`GitError` line naming the folder, the
command and git's own message.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import git

from orchestrator.adapters.timing import span
from orchestrator.domain.errors import GitError

# Works without the user's git identity or signing key; hooks are not ours to run.
_IDENTITY = ["user.name=orchestrator", "user.email=orchestrator@localhost", "commit.gpgsign=false"]
# Plain two-way markers whatever the user's merge.conflictStyle, so checks stay simple.
_MERGE_CONFIG = [*_IDENTITY, "merge.conflictStyle=merge"]
_MARKERS = ("<<<<<<< ", ">>>>>>> ")
_HINTS = (
    (".lock", "another git process may be running; if none is, delete the stale lock file"),
    ("terminal prompts disabled", "git must reach the remote without a password prompt"),
    ("could not read from remote", "check the remote's URL and credentials"),
    ("permission denied", "check the permissions of the repository's files"),
)
# Worktree add/remove and branch deletion of one repository, serialised between threads.
_REPO_LOCKS: dict[str, threading.Lock] = {}
_REPO_LOCKS_GUARD = threading.Lock()


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


def _git(
    cwd: Path,
    cmd: str,
    *args: str,
    config: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> str:
    """Run ``git [-c config]... cmd args`` in ``cwd`` and return its stdout."""
    return str(_run(cwd, cmd, args, config, env, timeout_s, as_text=True))


def _git_bytes(cwd: Path, cmd: str, *args: str, config: list[str] | None = None) -> bytes:
    """:func:`_git`, with stdout as raw bytes (for content that need not be UTF-8)."""
    out = _run(cwd, cmd, args, config, None, None, as_text=False)
    return out if isinstance(out, bytes) else str(out).encode()


def _run(
    cwd: Path,
    cmd: str,
    args: tuple[str, ...],
    config: list[str] | None,
    env: dict[str, str] | None,
    timeout_s: float | None,
    as_text: bool,
) -> object:
    """Run a git command; its stdout as GitPython gives it (text, or bytes unless ``as_text``)."""
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


def _status(cwd: Path, cmd: str, *args: str) -> int:
    """Exit status of a git command used as a question (is-ancestor, verify)."""
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


def _names(out: str) -> list[str]:
    """Paths from ``-z`` output."""
    return [name for name in out.split("\0") if name]


def init_repo(path: Path, files: dict[str, str], message: str = "initial commit") -> None:
    """Create a repository on branch main holding ``files`` in one commit."""
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "--no-verify", "--allow-empty", "-m", message, config=_IDENTITY)


def branches(path: Path) -> tuple[set[str], str | None]:
    """(local branch names, the branch checked out or None when HEAD is detached) of a checkout.

    GitError when ``path`` is missing, not a repository itself (its parents are
    not searched), bare, or has no commits yet.
    """
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


class GitRepo:
    """One user repository and the orchestrator's worktrees inside it."""

    def __init__(self, path: Path, main_branch: str | None = None) -> None:
        self.path = Path(path).absolute()
        names, _ = branches(self.path)
        if main_branch is None:
            main_branch = next((b for b in ("main", "master") if b in names), None)
            if main_branch is None:
                raise GitError(
                    f"{self.path}: repository has no main or master branch: set main_branch in the config"
                )
        elif main_branch not in names:
            raise GitError(
                f"{self.path}: main_branch {main_branch!r} does not exist; create it or fix the config"
            )
        self._main = main_branch

    @property
    def main(self) -> str:
        """Name of the branch the orchestrator merges into."""
        return self._main

    @property
    def orch_dir(self) -> Path:
        """The orchestrator's folder inside the project (git-excluded)."""
        return self.path / ".orch"

    @property
    def _worktrees_dir(self) -> Path:
        return self.orch_dir / "worktrees"

    def worktree_path(self, name: str) -> Path:
        """Where the worktree called ``name`` lives."""
        return self._worktrees_dir / name

    def _lock(self) -> threading.Lock:
        with _REPO_LOCKS_GUARD:
            return _REPO_LOCKS.setdefault(str(self.path.resolve()), threading.Lock())

    def is_worktree(self, path: Path) -> bool:
        """Whether ``path`` is one of ours: a linked worktree under .orch/worktrees."""
        resolved = Path(path).resolve()
        return self._worktrees_dir.resolve() in resolved.parents and (resolved / ".git").is_file()

    def _own(self, worktree: Path) -> Path:
        """``worktree`` if it is one of ours, else a GitError."""
        if not self.is_worktree(worktree):
            raise GitError(
                f"{worktree}: not an orchestrator worktree under {self._worktrees_dir}; refusing"
            )
        return Path(worktree)

    def ensure_excluded(self) -> None:
        """List ``.orch/`` in the repository's ``info/exclude`` (never in .gitignore)."""
        self.exclude(".orch/")

    def exclude(self, pattern: str) -> None:
        """Add ``pattern`` to the repository's ``info/exclude`` unless it is there already."""
        common = Path(_git(self.path, "rev-parse", "--git-common-dir"))
        exclude = (common if common.is_absolute() else self.path / common) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        current = exclude.read_text() if exclude.exists() else ""
        if pattern in (line.strip() for line in current.splitlines()):
            return
        separator = "\n" if current and not current.endswith("\n") else ""
        exclude.write_text(f"{current}{separator}{pattern}\n")

    def tree_files(self, ref: str | None = None) -> list[str]:
        """Paths of every file committed at ``ref`` (default: main)."""
        return _names(_git(self.path, "ls-tree", "-r", "--name-only", "-z", ref or self.main))

    def show_file(self, name: str, ref: str | None = None) -> str:
        """The text of a file committed at ``ref`` (default: main); GitError if absent."""
        return _git(self.path, "show", f"{ref or self.main}:{name}")

    def head(self, ref: str | None = None) -> str:
        """Commit id of ``ref`` (default: main)."""
        return _git(self.path, "rev-parse", "--verify", f"{ref or self.main}^{{commit}}")

    def head_of(self, worktree: Path) -> str:
        """Commit id checked out in a worktree (GitError if the folder is not one)."""
        # Without the ceiling, a leftover plain folder would report the user's HEAD.
        ceiling = {"GIT_CEILING_DIRECTORIES": str(Path(worktree).resolve().parent)}
        return _git(worktree, "rev-parse", "--verify", "HEAD", env=ceiling)

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether commit ``a`` is ``b`` or one of its ancestors."""
        return _status(self.path, "merge-base", "--is-ancestor", a, b) == 0

    def branch_exists(self, branch: str) -> bool:
        """Whether a local branch of that name exists."""
        return _status(self.path, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}") == 0

    def list_orch_branches(self, prefix: str) -> list[str]:
        """Local branches under ``prefix/`` (the orchestrator's branch prefix)."""
        out = _git(
            self.path,
            "for-each-ref",
            "--format=%(refname:short)",
            f"refs/heads/{prefix.rstrip('/')}/",
        )
        return [name for name in out.splitlines() if name]

    def _worktree_entries(self) -> list[dict[str, str]]:
        """``git worktree list --porcelain`` as one dict per worktree."""
        entries: list[dict[str, str]] = []
        for line in _git(self.path, "worktree", "list", "--porcelain").splitlines():
            key, _, value = line.partition(" ")
            if key == "worktree":
                entries.append({})
            if key and entries:
                entries[-1][key] = value
        return entries

    def list_worktrees(self) -> list[Path]:
        """The orchestrator's worktrees registered in the repository."""
        root = self._worktrees_dir.resolve()
        paths = [Path(e["worktree"]) for e in self._worktree_entries()]
        return [p for p in paths if root in p.resolve().parents]

    def add_worktree(self, name: str, branch: str, start: str) -> Path:
        """A fresh worktree at ``.orch/worktrees/<name>`` on a new ``branch`` from ``start``.

        Leftovers of an earlier attempt or a crash (the folder, the branch) are
        removed first, so the worktree always starts clean.
        """
        path = self.worktree_path(name)
        with self._lock():
            self._remove(path, branch)
            path.parent.mkdir(parents=True, exist_ok=True)
            _git(self.path, "worktree", "add", "-q", "-b", branch, str(path), start)
        return path

    def remove_worktree(self, name: str, branch: str | None = None) -> None:
        """Remove a worktree (and its branch); nothing happens if already gone."""
        with self._lock():
            self._remove(self.worktree_path(name), branch)

    def _remove(self, path: Path, branch: str | None) -> None:
        if path.exists() or path.is_symlink():
            try:
                _git(self.path, "worktree", "remove", "--force", "--force", str(path))
            except GitError:  # a folder git no longer knows as a worktree
                shutil.rmtree(path, ignore_errors=True)
        _git(self.path, "worktree", "prune")
        if branch and self.branch_exists(branch):
            self._drop_branch(branch)

    def delete_branch(self, branch: str) -> bool:
        """Delete a local branch; False if it is gone or checked out somewhere (then it stays)."""
        with self._lock():
            ref = f"refs/heads/{branch}"
            if not self.branch_exists(branch) or any(e.get("branch") == ref for e in self._worktree_entries()):
                return False  # gone, or checked out in a worktree that is not ours
            self._drop_branch(branch)
            return True

    def _drop_branch(self, branch: str) -> None:
        # Not ``git branch -D``: it always rewrites .git/config (to drop the branch's section), and
        # the config.lock it leaves for a moment makes the CLI's sandbox fail to start other
        # workers' commands. Our branches never have a config section, so the ref is all there is.
        _git(self.path, "update-ref", "-d", f"refs/heads/{branch}")

    def _stage_all(self, worktree: Path) -> None:
        """``git add -A``, minus anything under ``.orch/`` should it not be excluded."""
        _git(worktree, "add", "-A")
        _git(worktree, "reset", "-q", "--", ".orch")

    def commit_all(self, worktree: Path, message: str, amend: bool = False) -> str | None:
        """Commit everything changed in a worktree (never ``.orch/``); None when nothing changed.

        With ``amend`` the change joins the worktree's last commit (keeping its message and parents).
        """
        self._own(worktree)
        self._stage_all(worktree)
        if _status(worktree, "diff", "--cached", "--quiet") == 0:
            return None
        how = ["--amend", "--no-edit"] if amend else ["-m", message]
        _git(worktree, "commit", "-q", "--no-verify", *how, config=_IDENTITY)
        return self.head_of(worktree)

    def diff_summary(self, worktree: Path, base: str) -> tuple[str, list[str], int]:
        """(diff stat, changed paths, changed lines) of a worktree's HEAD against ``base``."""
        stat = _git(worktree, "diff", "--no-color", "--no-ext-diff", "--stat", base, "HEAD")
        files = _names(_git(worktree, "diff", "--name-only", "-z", base, "HEAD"))
        lines = 0
        for row in _git(worktree, "diff", "--numstat", "--no-renames", base, "HEAD").splitlines():
            added, deleted, _ = row.split("\t", 2)
            lines += (int(added) if added.isdigit() else 0) + (
                int(deleted) if deleted.isdigit() else 0
            )
        return stat, files, lines

    def diff_text(self, worktree: Path, base: str) -> str:
        """The full diff of a worktree's HEAD against ``base``."""
        return _git(worktree, "diff", "--no-color", "--no-ext-diff", base, "HEAD")

    def added_patch(self, base: str, head: str) -> bytes:
        """Everything ``head`` adds over ``base`` as raw unified diffs with no context.

        First the diff of the two commits (what the result adds, merge resolutions
        included), then each commit's own patch between them: a line one commit
        adds and a later one deletes is still in the history that would be merged.
        Binary files are diffed as text and external diff or textconv drivers are
        off, so every added byte is there to scan.
        """
        # Explicit prefixes: a user's diff.noprefix or diff.mnemonicPrefix must not hide the paths.
        flags = ["--no-color", "--no-ext-diff", "--no-textconv", "-U0", "--text", "-M",
                 "--src-prefix=a/", "--dst-prefix=b/"]
        config = ["core.quotePath=false"]
        result = _git_bytes(self.path, "diff", *flags, base, head, "--", config=config)
        commits = _git_bytes(self.path, "log", "-p", "--no-merges", "--format=%H", *flags,
                             f"{base}..{head}", "--", config=config)
        return result + b"\n" + commits

    def commit_messages(self, base: str, head: str) -> dict[str, str]:
        """The message of every commit in ``base..head``, by commit id."""
        out = _git(self.path, "log", "--format=%H%x00%B%x00", f"{base}..{head}", "--")
        fields = [f.strip("\n") for f in out.split("\0")]
        return {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i]}

    def deleted_files(self, worktree: Path, base: str) -> list[str]:
        """Paths present at ``base`` and gone at the worktree's HEAD."""
        return _names(_git(worktree, "diff", "--name-only", "-z", "--diff-filter=D", base, "HEAD"))

    def merge_branch(self, worktree: Path, branch: str, message: str) -> list[str]:
        """Merge ``branch`` into a worktree; [] when clean, else the conflicted paths.

        On conflicts the merge is left in progress so a resolver can edit the files.
        """
        self._own(worktree)
        try:
            _git(
                worktree,
                "merge",
                "--no-ff",
                "--no-edit",
                "-m",
                message,
                branch,
                config=_MERGE_CONFIG,
            )
        except GitError:
            conflicts = _names(_git(worktree, "diff", "--name-only", "-z", "--diff-filter=U"))
            if not conflicts:
                raise
            return conflicts
        return []

    def conflict_markers(self, worktree: Path, paths: list[str]) -> list[str]:
        """The paths that still hold a conflict marker line."""
        left = []
        for name in paths:
            file = Path(worktree) / name
            if not file.is_file():
                continue
            lines = file.read_text(errors="replace").splitlines()
            if any(line.startswith(_MARKERS) or line == "=======" for line in lines):
                left.append(name)
        return left

    def _merging(self, worktree: Path) -> bool:
        return _status(worktree, "rev-parse", "-q", "--verify", "MERGE_HEAD") == 0

    def conclude_merge(self, worktree: Path) -> str:
        """Commit the merge in progress with the files as they are now; its commit id."""
        self._own(worktree)
        if not self._merging(worktree):
            raise GitError(f"{worktree}: no merge in progress to conclude")
        self._stage_all(worktree)
        _git(worktree, "commit", "-q", "--no-edit", "--no-verify", config=_IDENTITY)
        return self.head_of(worktree)

    def abort_merge(self, worktree: Path) -> None:
        """Abandon the merge in progress, if any."""
        self._own(worktree)
        if self._merging(worktree):
            _git(worktree, "merge", "--abort")

    def reset_worktree_to(self, worktree: Path, commit: str) -> None:
        """Hard-reset and clean one of the orchestrator's own worktrees (never the user's)."""
        self._own(worktree)
        _git(worktree, "reset", "-q", "--hard", commit)
        _git(worktree, "clean", "-q", "-fdx")

    def _main_checkout(self) -> Path | None:
        """The working tree that has main checked out, if any (usually the user's)."""
        for entry in self._worktree_entries():
            if (
                entry.get("branch") == f"refs/heads/{self.main}"
                and Path(entry["worktree"]).is_dir()
            ):
                return Path(entry["worktree"])
        return None

    def _rebasing_main(self) -> bool:
        """Whether the user is rebasing main (HEAD detached, main about to be rewritten)."""
        for state in ("rebase-merge", "rebase-apply"):
            head_name = self.path / _git(self.path, "rev-parse", "--git-path", f"{state}/head-name")
            if head_name.is_file() and head_name.read_text().strip() == f"refs/heads/{self.main}":
                return True
        return False

    def _blocking_changes(self, checkout: Path, old: str, new: str) -> list[str]:
        """Paths a fast-forward old..new would touch that have local changes in ``checkout``."""
        touched = set(
            _names(_git(self.path, "diff", "--name-only", "-z", "--no-renames", old, new))
        )
        status = _git(checkout, "status", "--porcelain", "-z", "--untracked-files=all")
        dirty: set[str] = set()
        fields = iter(status.split("\0"))
        for field in fields:  # "XY path", and for a rename or copy its source next
            if len(field) > 3:
                dirty.add(field[3:])
                if field[0] in "RC":
                    dirty.add(next(fields, ""))
        # Ignored files are not in the status, and git overwrites them silently.
        added = _names(_git(self.path, "diff", "--name-only", "-z", "--diff-filter=A", old, new))
        dirty |= {p for p in added if (checkout / p).exists() or (checkout / p).is_symlink()}
        return sorted(touched & dirty)

    def advance_main(self, new: str, expected_old: str) -> tuple[bool, str]:
        """Fast-forward main to ``new`` if it still is ``expected_old``; (moved, why not).

        Where main is checked out (normally the user's checkout), it moves only
        if none of the files it changes has uncommitted or untracked changes
        there; otherwise the ref is swapped atomically against ``expected_old``.
        """
        new, old = self.head(new), self.head(expected_old)
        if not self.is_ancestor(old, new):
            raise GitError(
                f"{self.path}: {new[:12]} does not descend from {old[:12]}; main only fast-forwards"
            )
        current = self.head()
        if current != old:
            return (
                False,
                f"main moved since the cycle started ({old[:12]} -> {current[:12]}): merge again in a later cycle",
            )
        if self._rebasing_main():
            return (
                False,
                f"a rebase of {self.main} is in progress in {self.path}: main will advance in a later cycle",
            )
        checkout = self._main_checkout()
        if checkout is None:
            try:
                _git(self.path, "update-ref", f"refs/heads/{self.main}", new, old)
            except GitError:
                if self.head() != old:
                    return False, "main moved since the cycle started: merge again in a later cycle"
                raise
            return True, ""
        clash = self._blocking_changes(checkout, old, new)
        if clash:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            return (
                False,
                f"uncommitted changes in {shown} would be touched: main will advance in a later cycle",
            )
        try:
            _git(checkout, "merge", "-q", "--ff-only", new)
        except GitError as exc:  # git refused to overwrite local changes
            return False, f"fast-forward refused: {exc}; main will advance in a later cycle"
        return True, ""

    def has_remote(self, name: str = "origin") -> bool:
        """Whether the repository has a remote of that name."""
        return name in _git(self.path, "remote").splitlines()

    def remote_url(self, name: str = "origin") -> str | None:
        """The URL of a remote, or None when there is no such remote."""
        if not self.has_remote(name):
            return None
        return _git(self.path, "remote", "get-url", name).strip()

    def push_branch(self, branch: str, remote: str = "origin") -> None:
        """Push a task branch to ``remote`` as it is (a retried task replaces its old push)."""
        ref = f"refs/heads/{branch}"
        _git(self.path, "push", "-q", "--force", remote, f"{ref}:{ref}",
             env={"GIT_TERMINAL_PROMPT": "0"}, timeout_s=300)

    def fetch_main(self, remote: str = "origin") -> str:
        """Fetch ``remote``'s main and return its commit."""
        # Into a ref of our own: FETCH_HEAD is shared with whatever else fetches here.
        ref = "refs/orch/remote-main"
        _git(self.path, "fetch", "-q", remote, f"+refs/heads/{self.main}:{ref}", env={"GIT_TERMINAL_PROMPT": "0"},
             timeout_s=300)
        return self.head(ref)

    def push_main(self, remote: str = "origin") -> None:
        """Push main to ``remote`` (never prompts; GitError on any failure)."""
        ref = f"refs/heads/{self.main}"
        _git(
            self.path,
            "push",
            "-q",
            remote,
            f"{ref}:{ref}",
            env={"GIT_TERMINAL_PROMPT": "0"},
            timeout_s=300,
        )
