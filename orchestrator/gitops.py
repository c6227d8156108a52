"""Git operations on a user's project: worktrees, commits, merges, main.

The only module that imports GitPython. Nothing here checks out, resets or
merges in the user's own working tree: workers, the judge and the refinery
work in worktrees under ``.orch/worktrees``. Main moves only by fast-forward,
and only when that cannot touch the user's uncommitted changes.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import git

from .errors import GitError

_IDENTITY = ("-c", "user.name=orchestrator", "-c", "user.email=orchestrator@localhost")
_MARKERS = ("<<<<<<< ", ">>>>>>> ")


def _run(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; a failure becomes one GitError line."""
    try:
        return git.Git(str(cwd)).execute(["git", *args], with_extended_output=False, strip_newline_in_stdout=True)
    except git.GitCommandError as exc:
        detail = next((line.strip() for line in str(exc.stderr).splitlines() if line.strip()), "")
        detail = detail.removeprefix("stderr: ").strip("'")
        raise GitError(f"{cwd}: git {args[0]} failed: {detail or exc.status}") from exc


def init_repo(path: Path, files: dict[str, str], message: str = "initial commit") -> None:
    """Create a repository on branch main holding ``files`` in one commit."""
    path.mkdir(parents=True, exist_ok=True)
    _run(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    _run(path, "add", "-A")
    _run(path, *_IDENTITY, "commit", "-q", "-m", message)


class Project:
    """One user repository and the orchestrator's worktrees inside it."""

    def __init__(self, path: Path, main_branch: str | None = None) -> None:
        self.path = Path(path)
        try:
            self.repo = git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise GitError(f"{self.path}: not a git repository; run `git init` there") from exc
        if not self.repo.head.is_valid() and not self.repo.heads:
            raise GitError(f"{self.path}: repository has no commits: make a first commit")
        names = {h.name for h in self.repo.heads}
        if main_branch is None:
            main_branch = next((b for b in ("main", "master") if b in names), None)
            if main_branch is None:
                raise GitError(f"{self.path}: no main or master branch: set main_branch in the config")
        elif main_branch not in names:
            raise GitError(f"{self.path}: main_branch {main_branch!r} does not exist")
        self.main = main_branch

    @property
    def orch_dir(self) -> Path:
        return self.path / ".orch"

    def worktree_path(self, name: str) -> Path:
        return self.orch_dir / "worktrees" / name

    def ensure_excluded(self) -> None:
        """List ``.orch/`` in ``.git/info/exclude`` (never in the user's .gitignore)."""
        common = Path(_run(self.path, "rev-parse", "--git-common-dir"))
        exclude = (common if common.is_absolute() else self.path / common) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        current = exclude.read_text() if exclude.exists() else ""
        if ".orch/" not in current.splitlines():
            exclude.write_text(current + ("" if current.endswith("\n") or not current else "\n") + ".orch/\n")

    def head(self, ref: str | None = None) -> str:
        """Commit id of ``ref`` (default: main)."""
        return _run(self.path, "rev-parse", "--verify", f"{ref or self.main}^{{commit}}")

    def head_of(self, worktree: Path) -> str:
        """Commit id checked out in a worktree."""
        return _run(worktree, "rev-parse", "HEAD")

    def branch_exists(self, branch: str) -> bool:
        return bool(_run(self.path, "branch", "--list", branch))

    def add_worktree(self, name: str, branch: str, start: str) -> Path:
        """A fresh worktree at ``.orch/worktrees/<name>`` on a new ``branch`` from ``start``.

        Leftovers of an earlier attempt or a crash (the folder, the branch) are
        removed first, so the worktree always starts clean.
        """
        self.remove_worktree(name, branch)
        path = self.worktree_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        _run(self.path, "worktree", "add", "-q", "-b", branch, str(path), start)
        return path

    def remove_worktree(self, name: str, branch: str | None = None) -> None:
        """Remove a worktree (and its branch); nothing happens if already gone."""
        path = self.worktree_path(name)
        if path.exists():
            try:
                _run(self.path, "worktree", "remove", "--force", "--force", str(path))
            except GitError:
                shutil.rmtree(path, ignore_errors=True)
        _run(self.path, "worktree", "prune")
        if branch and self.branch_exists(branch):
            _run(self.path, "branch", "-D", branch)

    def list_worktrees(self) -> list[Path]:
        """The orchestrator's worktrees registered in the repository."""
        root = self.orch_dir / "worktrees"
        out = _run(self.path, "worktree", "list", "--porcelain")
        paths = [Path(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("worktree ")]
        return [p for p in paths if root in p.parents]

    def list_orch_branches(self, prefix: str) -> list[str]:
        out = _run(self.path, "branch", "--list", f"{prefix}/*", "--format=%(refname:short)")
        return [b for b in out.splitlines() if b]

    def commit_all(self, worktree: Path, message: str) -> str | None:
        """Commit everything changed in a worktree; None when nothing changed."""
        _run(worktree, "add", "-A")
        if not _run(worktree, "status", "--porcelain"):
            return None
        _run(worktree, *_IDENTITY, "commit", "-q", "--no-verify", "-m", message)
        return self.head_of(worktree)

    def diff_summary(self, worktree: Path, base: str) -> tuple[str, list[str], int]:
        """(diff stat, changed paths, changed lines) of a worktree's HEAD against ``base``."""
        stat = _run(worktree, "diff", "--stat", base, "HEAD")
        files = [f for f in _run(worktree, "diff", "--name-only", base, "HEAD").splitlines() if f]
        lines = 0
        for row in _run(worktree, "diff", "--numstat", base, "HEAD").splitlines():
            added, deleted, _ = row.split("\t", 2)
            lines += int(added) if added.isdigit() else 0
            lines += int(deleted) if deleted.isdigit() else 0
        return stat, files, lines

    def diff_text(self, worktree: Path, base: str) -> str:
        return _run(worktree, "diff", base, "HEAD")

    def deleted_files(self, worktree: Path, base: str) -> list[str]:
        out = _run(worktree, "diff", "--name-only", "--diff-filter=D", base, "HEAD")
        return [f for f in out.splitlines() if f]

    def merge_branch(self, worktree: Path, branch: str, message: str) -> list[str]:
        """Merge ``branch`` into a worktree; the conflicted paths, or [] when clean."""
        try:
            _run(worktree, *_IDENTITY, "merge", "--no-ff", "--no-edit", "-m", message, branch)
        except GitError:
            conflicts = _run(worktree, "diff", "--name-only", "--diff-filter=U").splitlines()
            if not conflicts:
                raise
            return conflicts
        return []

    def conflict_markers(self, worktree: Path, paths: list[str]) -> list[str]:
        """The paths that still hold a conflict marker line."""
        left = []
        for name in paths:
            file = worktree / name
            if not file.is_file():
                continue
            lines = file.read_text(errors="replace").splitlines()
            if any(line.startswith(_MARKERS) or line == "=======" for line in lines):
                left.append(name)
        return left

    def conclude_merge(self, worktree: Path) -> str:
        _run(worktree, "add", "-A")
        _run(worktree, *_IDENTITY, "commit", "-q", "--no-edit", "--no-verify")
        return self.head_of(worktree)

    def abort_merge(self, worktree: Path) -> None:
        with contextlib.suppress(GitError):  # no merge in progress
            _run(worktree, "merge", "--abort")

    def reset_worktree_to(self, worktree: Path, commit: str) -> None:
        """Hard-reset one of the orchestrator's own worktrees (never the user's)."""
        if (self.orch_dir / "worktrees") not in Path(worktree).parents:
            raise GitError(f"{worktree}: refusing to reset a folder outside .orch/worktrees")
        _run(worktree, "reset", "-q", "--hard", commit)
        _run(worktree, "clean", "-q", "-fdx")

    def is_ancestor(self, a: str, b: str) -> bool:
        try:
            _run(self.path, "merge-base", "--is-ancestor", a, b)
        except GitError:
            return False
        return True

    def _checked_out_branch(self) -> str | None:
        try:
            return _run(self.path, "symbolic-ref", "--quiet", "--short", "HEAD")
        except GitError:
            return None  # detached HEAD

    def advance_main(self, new: str, expected_old: str) -> tuple[bool, str]:
        """Fast-forward main to ``new`` if it still is ``expected_old``.

        Returns (moved, why not). When the user's checkout has main checked out,
        the fast-forward happens only if none of the files it changes has
        uncommitted or untracked changes there.
        """
        if not self.is_ancestor(expected_old, new):
            raise GitError(f"{self.path}: {new[:12]} does not descend from {expected_old[:12]}; main only fast-forwards")
        if self.head() != expected_old:
            return False, f"{self.main} moved since the cycle started; the merge waits for a later cycle"
        if self._checked_out_branch() != self.main:
            _run(self.path, "update-ref", f"refs/heads/{self.main}", new, expected_old)
            return True, ""
        touched = set(_run(self.path, "diff", "--name-only", expected_old, new).splitlines())
        status = _run(self.path, "status", "--porcelain", "--untracked-files=all")
        dirty = {line[3:].split(" -> ")[-1] for line in status.splitlines() if line}
        clash = sorted(touched & dirty)
        if clash:
            return False, f"uncommitted changes in {', '.join(clash[:5])} would be touched: main will advance in a later cycle"
        try:
            _run(self.path, "merge", "-q", "--ff-only", new)
        except GitError as exc:
            return False, f"fast-forward refused: {exc}"
        return True, ""

    def has_remote(self, name: str = "origin") -> bool:
        return name in {r.name for r in self.repo.remotes}

    def push_main(self, remote: str = "origin") -> None:
        _run(self.path, "push", "-q", remote, self.main)
