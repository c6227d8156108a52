"""Git operations on real repositories: the user's checkout is theirs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.git_repo import GitRepo
from orchestrator.domain.errors import GitError

pytestmark = pytest.mark.guarantee


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> GitRepo:
    init_repo(tmp_path / "repo", {"a.txt": "a\n", "b.txt": "b\n", ".gitignore": "*.log\n"})
    return GitRepo(tmp_path / "repo")


def new_commit(project: GitRepo, files: dict[str, str]) -> str:
    """A commit on a worktree branch from main, as a merge would make."""
    worktree = project.add_worktree("work", "orch/work", project.head())
    for name, content in files.items():
        (worktree / name).write_text(content)
    commit = project.commit_all(worktree, "change")
    assert commit is not None
    project.remove_worktree("work")  # keep the branch's commit reachable only by id
    return commit


def test_orch_folder_is_excluded_once_and_gitignore_untouched(project: GitRepo) -> None:
    project.ensure_excluded()
    project.ensure_excluded()
    exclude = (project.path / ".git" / "info" / "exclude").read_text()
    assert exclude.splitlines().count(".orch/") == 1
    assert (project.path / ".gitignore").read_text() == "*.log\n"


def test_worktree_starts_clean_and_commits_only_the_change(project: GitRepo) -> None:
    project.ensure_excluded()
    first = project.add_worktree("t1", "orch/t1", project.head())
    (first / "leftover.txt").write_text("from a crashed attempt")
    again = project.add_worktree("t1", "orch/t1", project.head())
    assert not (again / "leftover.txt").exists()
    assert project.commit_all(again, "nothing") is None
    (again / "a.txt").write_text("changed\n")
    (project.orch_dir / "plans").mkdir(parents=True, exist_ok=True)
    (project.orch_dir / "plans" / "x.md").write_text("audit")
    commit = project.commit_all(again, "change a")
    stat, files, lines = project.diff_summary(again, project.head())
    assert commit and files == ["a.txt"] and lines == 2 and "a.txt" in stat
    project.remove_worktree("t1", "orch/t1")
    assert project.list_worktrees() == [] and project.list_orch_branches("orch") == []


def test_main_fast_forwards_in_a_clean_checkout(project: GitRepo) -> None:
    old = project.head()
    new = new_commit(project, {"a.txt": "new a\n"})
    (project.path / "notes.log").write_text("untracked and ignored")
    (project.path / "todo.txt").write_text("untracked")
    assert project.advance_main(new, old) == (True, "")
    assert project.head() == new and (project.path / "a.txt").read_text() == "new a\n"
    assert (project.path / "todo.txt").read_text() == "untracked"


def test_main_waits_when_the_users_uncommitted_change_would_be_touched(project: GitRepo) -> None:
    old = project.head()
    new = new_commit(project, {"a.txt": "new a\n"})
    (project.path / "a.txt").write_text("the user's unsaved work\n")
    moved, reason = project.advance_main(new, old)
    assert not moved and "a.txt" in reason
    assert project.head() == old
    assert (project.path / "a.txt").read_text() == "the user's unsaved work\n"


def test_users_change_elsewhere_does_not_block_main(project: GitRepo) -> None:
    old = project.head()
    new = new_commit(project, {"a.txt": "new a\n"})
    (project.path / "b.txt").write_text("the user's edit\n")
    assert project.advance_main(new, old) == (True, "")
    assert (project.path / "b.txt").read_text() == "the user's edit\n"
    assert git(project.path, "status", "--porcelain") == "M b.txt"


def test_user_on_another_branch_keeps_it(project: GitRepo) -> None:
    old = project.head()
    new = new_commit(project, {"a.txt": "new a\n"})
    git(project.path, "checkout", "-q", "-b", "feature")
    (project.path / "a.txt").write_text("feature work\n")
    assert project.advance_main(new, old) == (True, "")
    assert project.head() == new
    assert git(project.path, "branch", "--show-current") == "feature"
    assert (project.path / "a.txt").read_text() == "feature work\n"


def test_main_that_moved_since_the_cycle_began_is_not_overwritten(project: GitRepo) -> None:
    old = project.head()
    new = new_commit(project, {"a.txt": "new a\n"})
    (project.path / "c.txt").write_text("c\n")
    git(project.path, "add", "c.txt")
    git(project.path, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "user commit")
    user_head = project.head()
    moved, reason = project.advance_main(new, old)
    assert not moved and "moved since the cycle started" in reason
    assert project.head() == user_head


def test_push_to_a_remote(project: GitRepo, tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "--bare", "remote.git")
    git(project.path, "remote", "add", "origin", str(tmp_path / "remote.git"))
    assert project.has_remote()
    project.push_main()
    assert git(tmp_path / "remote.git", "rev-parse", "main") == project.head()


def test_repository_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        GitRepo(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(GitError, match="has no commits"):
        GitRepo(empty)
    init_repo(tmp_path / "trunk", {"x": "x"})
    git(tmp_path / "trunk", "branch", "-m", "trunk")
    with pytest.raises(GitError, match="no main or master branch: set main_branch"):
        GitRepo(tmp_path / "trunk")
    assert GitRepo(tmp_path / "trunk", main_branch="trunk").main == "trunk"


def test_task_titles_never_reach_a_shell(project: GitRepo, tmp_path: Path) -> None:
    hostile = f"Fix it $(touch {tmp_path}/pwned) `touch {tmp_path}/pwned2`; touch {tmp_path}/pwned3"
    worktree = project.add_worktree("t1", "orch/t1", project.head())
    (worktree / "c.txt").write_text("c\n")
    commit = project.commit_all(worktree, f"{hostile}\n\norchestrator task t1")
    assert commit is not None
    assert git(worktree, "log", "-1", "--format=%s") == hostile  # kept as text
    assert not list(tmp_path.glob("pwned*"))  # and never run
