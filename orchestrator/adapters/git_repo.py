"""Git operations on a user's project: worktrees, commits, merges, main.

Commands run through :mod:`orchestrator.adapters.git_commands`. Nothing
here checks out, resets or merges in the user's own working tree: workers,
the judge and the refinery work in worktrees under ``.orch/worktrees``. Main moves only by fast-forward,
and only when that cannot touch the user's uncommitted changes.

Our worktrees are not git's linked worktrees but repositories of their own
that borrow the project's objects (``objects/info/alternates``) and read its
config. Claude Code's Bash sandbox guards a linked worktree's shared ``.git``
by briefly creating and removing placeholder files there (``config.lock``
among them) around every command: parallel sessions sharing one ``.git``
then break each other's sandbox start-up, and the user's own config writes
fail meanwhile. In a repository of its own, each session guards only its
own ``.git``. Every commit made in a worktree is fetched into the project at
once, as the worktree's branch, so the project always holds the work.
"""

from __future__ import annotations

import shutil
import threading
from contextlib import suppress
from functools import cached_property
from pathlib import Path

from orchestrator.adapters.git_commands import (
    IDENTITY,
    branches,
    changes_in_the_way,
    names_of,
    rebasing,
    run,
    run_bytes,
    status,
)
from orchestrator.domain.errors import GitError

# Plain two-way markers whatever the user's merge.conflictStyle, so checks stay simple.
_MERGE_CONFIG = [*IDENTITY, "merge.conflictStyle=merge"]
_MARKERS = ("<<<<<<< ", ">>>>>>> ")
# Worktree add/remove and branch deletion of one repository, serialised between threads.
_REPO_LOCKS: dict[str, threading.Lock] = {}
_REPO_LOCKS_GUARD = threading.Lock()


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
        """Whether ``path`` is one of ours: a repository under .orch/worktrees.

        (A ``.git`` file rather than a folder: a linked worktree left by an older version.)
        """
        resolved = Path(path).resolve()
        return self._worktrees_dir.resolve() in resolved.parents and (resolved / ".git").exists()

    @cached_property
    def _common_dir(self) -> Path:
        common = Path(run(self.path, "rev-parse", "--git-common-dir").strip())
        return common if common.is_absolute() else (self.path / common).resolve()

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
        exclude = self._common_dir / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        current = exclude.read_text() if exclude.exists() else ""
        if pattern in (line.strip() for line in current.splitlines()):
            return
        separator = "\n" if current and not current.endswith("\n") else ""
        exclude.write_text(f"{current}{separator}{pattern}\n")

    def tree_files(self, ref: str | None = None) -> list[str]:
        """Paths of every file committed at ``ref`` (default: main)."""
        return names_of(run(self.path, "ls-tree", "-r", "--name-only", "-z", ref or self.main))

    def show_file(self, name: str, ref: str | None = None) -> str:
        """The text of a file committed at ``ref`` (default: main); GitError if absent."""
        return run(self.path, "show", f"{ref or self.main}:{name}")

    def head(self, ref: str | None = None) -> str:
        """Commit id of ``ref`` (default: main)."""
        return run(self.path, "rev-parse", "--verify", f"{ref or self.main}^{{commit}}")

    def head_of(self, worktree: Path) -> str:
        """Commit id checked out in a worktree (GitError if the folder is not one)."""
        return run(worktree, "rev-parse", "--verify", "HEAD", env=_ceiling(worktree))

    def clean_tree_of(self, worktree: Path) -> str | None:
        """The tree id a worktree has checked out, or None when its files differ from it.

        Differ: a change to a tracked file, or an untracked file that is not ignored.
        """
        if run(worktree, "status", "--porcelain", "-z", env=_ceiling(worktree)):
            return None
        return run(worktree, "rev-parse", "--verify", "HEAD^{tree}", env=_ceiling(worktree))

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether commit ``a`` is ``b`` or one of its ancestors."""
        return status(self.path, "merge-base", "--is-ancestor", a, b) == 0

    def branch_exists(self, branch: str) -> bool:
        """Whether a local branch of that name exists."""
        return status(self.path, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}") == 0

    def list_orch_branches(self, prefix: str) -> list[str]:
        """Local branches under ``prefix/`` (the orchestrator's branch prefix)."""
        out = run(
            self.path,
            "for-each-ref",
            "--format=%(refname:short)",
            f"refs/heads/{prefix.rstrip('/')}/",
        )
        return [name for name in out.splitlines() if name]

    def _worktree_entries(self) -> list[dict[str, str]]:
        """``git worktree list --porcelain`` as one dict per worktree."""
        entries: list[dict[str, str]] = []
        for line in run(self.path, "worktree", "list", "--porcelain").splitlines():
            key, _, value = line.partition(" ")
            if key == "worktree":
                entries.append({})
            if key and entries:
                entries[-1][key] = value
        return entries

    def list_worktrees(self) -> list[Path]:
        """The orchestrator's worktrees (and linked worktrees of older versions still registered)."""
        root = self._worktrees_dir
        found = {p for p in root.iterdir() if self.is_worktree(p)} if root.is_dir() else set()
        linked = [Path(e["worktree"]) for e in self._worktree_entries()]
        found |= {root / p.name for p in linked if root.resolve() in p.resolve().parents}
        return sorted(found)

    def add_worktree(self, name: str, branch: str, start: str) -> Path:
        """A fresh worktree at ``.orch/worktrees/<name>`` on a new ``branch`` from ``start``.

        Leftovers of an earlier attempt or a crash (the folder, the branch) are
        removed first, so the worktree always starts clean.
        """
        path = self.worktree_path(name)
        with self._lock():
            self._remove(path, branch)
            commit = self.head(start)
            path.mkdir(parents=True)
            run(path, "init", "-q", f"--object-format={self._object_format}")
            git_dir = path / ".git"
            (git_dir / "objects" / "info" / "alternates").write_text(f"{self._common_dir / 'objects'}\n")
            # The project's settings (filters, merge drivers, line endings) hold here as in a linked
            # worktree. The lines after the include win: a core.worktree set in the project must not
            # send this repository's resets and cleans to the user's own files.
            with (git_dir / "config").open("a") as config:
                config.write(f"[include]\n\tpath = {self._common_dir / 'config'}\n"
                             f"[core]\n\tbare = false\n\tworktree = {path}\n")
            run(path, "checkout", "-q", "-b", branch, commit)
            run(self.path, "update-ref", f"refs/heads/{branch}", commit)
        return path

    @cached_property
    def _object_format(self) -> str:
        return run(self.path, "rev-parse", "--show-object-format").strip()

    def _publish(self, worktree: Path) -> None:
        """Fetch the worktree's HEAD into the project as its branch: the project holds every commit."""
        git_dir = Path(worktree) / ".git"
        if git_dir.is_file():  # a linked worktree of an older version: its branch is the project's
            return
        head = (git_dir / "HEAD").read_text().strip()  # "ref: refs/heads/<branch>", without a git process
        if not head.startswith("ref: refs/heads/"):
            raise GitError(f"{worktree}: HEAD is not on the worktree's branch ({head[:40]}); its work cannot be kept")
        run(self.path, "fetch", "-q", "--no-tags", "--no-write-fetch-head", str(worktree),
            f"+HEAD:{head.removeprefix('ref: ')}")

    def remove_worktree(self, name: str, branch: str | None = None) -> None:
        """Remove a worktree (and its branch); nothing happens if already gone."""
        with self._lock():
            self._remove(self.worktree_path(name), branch)

    def _remove(self, path: Path, branch: str | None) -> None:
        if (path / ".git").is_file():  # a linked worktree of an older version
            with suppress(GitError):  # a folder git no longer knows as a worktree goes below
                run(self.path, "worktree", "remove", "--force", "--force", str(path))
        if path.is_symlink():
            path.unlink()
        elif path.exists():
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise GitError(f"{path}: cannot remove this worktree: {exc}; delete the folder") from exc
        if (self._common_dir / "worktrees").is_dir():  # registrations whose folder is gone
            run(self.path, "worktree", "prune")
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
        run(self.path, "update-ref", "-d", f"refs/heads/{branch}")

    def _stage_all(self, worktree: Path) -> None:
        """``git add -A``, minus anything under ``.orch/`` should it not be excluded."""
        run(worktree, "add", "-A")
        run(worktree, "reset", "-q", "--", ".orch")

    def commit_all(self, worktree: Path, message: str, amend: bool = False) -> str | None:
        """Commit everything changed in a worktree (never ``.orch/``); None when nothing changed.

        With ``amend`` the change joins the worktree's last commit (keeping its message and parents).
        """
        self._own(worktree)
        self._stage_all(worktree)
        if status(worktree, "diff", "--cached", "--quiet") == 0:
            self._publish(worktree)  # commits an agent made itself
            return None
        how = ["--amend", "--no-edit"] if amend else ["-m", message]
        run(worktree, "commit", "-q", "--no-verify", *how, config=IDENTITY)
        self._publish(worktree)
        return self.head_of(worktree)

    def diff_summary(self, worktree: Path, base: str) -> tuple[str, list[str], int]:
        """(diff stat, changed paths, changed lines) of a worktree's HEAD against ``base``."""
        stat = run(worktree, "diff", "--no-color", "--no-ext-diff", "--stat", base, "HEAD")
        files = names_of(run(worktree, "diff", "--name-only", "-z", base, "HEAD"))
        lines = 0
        for row in run(worktree, "diff", "--numstat", "--no-renames", base, "HEAD").splitlines():
            added, deleted, _ = row.split("\t", 2)
            lines += (int(added) if added.isdigit() else 0) + (
                int(deleted) if deleted.isdigit() else 0
            )
        return stat, files, lines

    def diff_text(self, worktree: Path, base: str) -> str:
        """The full diff of a worktree's HEAD against ``base``."""
        return run(worktree, "diff", "--no-color", "--no-ext-diff", base, "HEAD")

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
        result = run_bytes(self.path, "diff", *flags, base, head, "--", config=config)
        commits = run_bytes(self.path, "log", "-p", "--no-merges", "--format=%H", *flags,
                             f"{base}..{head}", "--", config=config)
        return result + b"\n" + commits

    def commit_messages(self, base: str, head: str) -> dict[str, str]:
        """The message of every commit in ``base..head``, by commit id."""
        out = run(self.path, "log", "--format=%H%x00%B%x00", f"{base}..{head}", "--")
        fields = [f.strip("\n") for f in out.split("\0")]
        return {fields[i]: fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i]}

    def deleted_files(self, worktree: Path, base: str) -> list[str]:
        """Paths present at ``base`` and gone at the worktree's HEAD."""
        return names_of(run(worktree, "diff", "--name-only", "-z", "--diff-filter=D", base, "HEAD"))

    def merge_branch(self, worktree: Path, branch: str, message: str) -> list[str]:
        """Merge ``branch`` into a worktree; [] when clean, else the conflicted paths.

        On conflicts the merge is left in progress so a resolver can edit the files.
        """
        self._own(worktree)
        # The branch lives in the project and its objects are shared: a ref to it here is enough,
        # and merging by name puts the branch's name, not a commit id, in the conflict markers.
        run(worktree, "update-ref", f"refs/heads/{branch}", self.head(branch))
        try:
            run(worktree, "merge", "--no-ff", "--no-edit", "-m", message, branch, config=_MERGE_CONFIG)
        except GitError:
            conflicts = names_of(run(worktree, "diff", "--name-only", "-z", "--diff-filter=U"))
            if not conflicts:
                raise
            return conflicts
        self._publish(worktree)
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
        return status(worktree, "rev-parse", "-q", "--verify", "MERGE_HEAD") == 0

    def conclude_merge(self, worktree: Path) -> str:
        """Commit the merge in progress with the files as they are now; its commit id."""
        self._own(worktree)
        if not self._merging(worktree):
            raise GitError(f"{worktree}: no merge in progress to conclude")
        self._stage_all(worktree)
        run(worktree, "commit", "-q", "--no-edit", "--no-verify", config=IDENTITY)
        self._publish(worktree)
        return self.head_of(worktree)

    def abort_merge(self, worktree: Path) -> None:
        """Abandon the merge in progress, if any."""
        self._own(worktree)
        if self._merging(worktree):
            run(worktree, "merge", "--abort")

    def reset_worktree_to(self, worktree: Path, commit: str) -> None:
        """Hard-reset and clean one of the orchestrator's own worktrees (never the user's)."""
        self._own(worktree)
        run(worktree, "reset", "-q", "--hard", commit)
        run(worktree, "clean", "-q", "-fdx")
        self._publish(worktree)

    def _main_checkout(self) -> Path | None:
        """The working tree that has main checked out, if any (usually the user's)."""
        for entry in self._worktree_entries():
            if (
                entry.get("branch") == f"refs/heads/{self.main}"
                and Path(entry["worktree"]).is_dir()
            ):
                return Path(entry["worktree"])
        return None

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
        if rebasing(self.path, self.main):
            return (
                False,
                f"a rebase of {self.main} is in progress in {self.path}: main will advance in a later cycle",
            )
        checkout = self._main_checkout()
        if checkout is None:
            try:
                run(self.path, "update-ref", f"refs/heads/{self.main}", new, old)
            except GitError:
                if self.head() != old:
                    return False, "main moved since the cycle started: merge again in a later cycle"
                raise
            return True, ""
        clash = changes_in_the_way(self.path, checkout, old, new)
        if clash:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            return (
                False,
                f"uncommitted changes in {shown} would be touched: main will advance in a later cycle",
            )
        try:
            run(checkout, "merge", "-q", "--ff-only", new)
        except GitError as exc:  # git refused to overwrite local changes
            return False, f"fast-forward refused: {exc}; main will advance in a later cycle"
        return True, ""

    def has_remote(self, name: str = "origin") -> bool:
        """Whether the repository has a remote of that name."""
        return name in run(self.path, "remote").splitlines()

    def remote_url(self, name: str = "origin") -> str | None:
        """The URL of a remote, or None when there is no such remote."""
        if not self.has_remote(name):
            return None
        return run(self.path, "remote", "get-url", name).strip()

    def push_branch(self, branch: str, remote: str = "origin") -> None:
        """Push a task branch to ``remote`` as it is (a retried task replaces its old push)."""
        ref = f"refs/heads/{branch}"
        run(self.path, "push", "-q", "--force", remote, f"{ref}:{ref}",
             env={"GIT_TERMINAL_PROMPT": "0"}, timeout_s=300)

    def fetch_main(self, remote: str = "origin") -> str:
        """Fetch ``remote``'s main and return its commit."""
        return self.fetch_branch(self.main, "refs/orch/remote-main", remote)

    def fetch_branch(self, branch: str, ref: str, remote: str = "origin") -> str:
        """Fetch ``remote``'s ``branch`` into ``ref`` (ours: FETCH_HEAD is shared) and return its commit."""
        run(self.path, "fetch", "-q", remote, f"+refs/heads/{branch}:{ref}", env={"GIT_TERMINAL_PROMPT": "0"},
             timeout_s=300)
        return self.head(ref)

    def push_main(self, remote: str = "origin") -> None:
        """Push main to ``remote`` (never prompts; GitError on any failure)."""
        ref = f"refs/heads/{self.main}"
        run(self.path, "push", "-q", remote, f"{ref}:{ref}", env={"GIT_TERMINAL_PROMPT": "0"}, timeout_s=300)


def _ceiling(worktree: Path) -> dict[str, str]:
    """Git's environment for a command in ``worktree``: it stops at the worktree's own folder.

    Without the ceiling, a leftover plain folder would report the user's repository.
    """
    return {"GIT_CEILING_DIRECTORIES": str(Path(worktree).resolve().parent)}
