"""GitRepo against real repositories in tmp_path: worktrees, commits, merges, main."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.git_repo import GitRepo
from orchestrator.domain.errors import GitError

pytestmark = pytest.mark.guarantee

FILES = {"a.txt": "one\n", "b.txt": "two\n", ".gitignore": "*.log\n"}


@pytest.fixture(autouse=True)
def plain_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git config: the operations must not need one."""
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def sh(cwd: Path, *args: str) -> str:
    """git as the user would run it (with an identity of their own)."""
    identity = ["-c", "user.name=user", "-c", "user.email=user@example.com"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> GitRepo:
    init_repo(tmp_path / "app", FILES)
    opened = GitRepo(tmp_path / "app")
    opened.ensure_excluded()
    return opened


def change(
    project: GitRepo, name: str, files: dict[str, str], delete: tuple[str, ...] = ()
) -> tuple[Path, str]:
    """A worktree from main with ``files`` written and ``delete`` removed, committed."""
    worktree = project.add_worktree(name, f"orch/{name}", project.head())
    for path, content in files.items():
        (worktree / path).write_text(content)
    for path in delete:
        (worktree / path).unlink()
    sha = project.commit_all(worktree, f"change {name}")
    assert sha is not None
    return worktree, sha


def one_line_naming(exc: pytest.ExceptionInfo[GitError], path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_init_repo_commits_files_on_main(tmp_path: Path) -> None:
    init_repo(tmp_path / "r", {"src/x.py": "x = 1\n"}, message="first")
    assert sh(tmp_path / "r", "branch", "--show-current") == "main"
    assert (
        sh(tmp_path / "r", "log", "--format=%s %an <%ae>")
        == "first orchestrator <orchestrator@localhost>"
    )
    assert sh(tmp_path / "r", "status", "--porcelain") == ""
    assert GitRepo(tmp_path / "r").main == "main"


def test_ensure_excluded_once_and_gitignore_untouched(project: GitRepo) -> None:
    exclude = project.path / ".git" / "info" / "exclude"
    exclude.unlink()
    exclude.parent.rmdir()
    project.ensure_excluded()
    project.ensure_excluded()
    assert exclude.read_text().splitlines().count(".orch/") == 1
    assert (project.path / ".gitignore").read_text() == FILES[".gitignore"]
    (project.orch_dir / "runs").mkdir(parents=True)
    (project.orch_dir / "runs" / "x.md").write_text("record\n")
    assert sh(project.path, "status", "--porcelain") == ""


def test_ensure_excluded_appends_to_existing_exclude(project: GitRepo) -> None:
    exclude = project.path / ".git" / "info" / "exclude"
    exclude.write_text("# mine\n*.tmp")
    project.ensure_excluded()
    project.ensure_excluded()
    assert exclude.read_text() == "# mine\n*.tmp\n.orch/\n"


def test_add_worktree_twice_starts_clean(project: GitRepo) -> None:
    start = project.head()
    worktree, sha = change(project, "t1", {"a.txt": "changed\n", "new.txt": "new\n"})
    (worktree / "stray.txt").write_text("left over\n")
    assert project.branch_exists("orch/t1") and project.head("orch/t1") == sha
    again = project.add_worktree("t1", "orch/t1", start)
    assert again == worktree == project.orch_dir / "worktrees" / "t1"
    assert project.head_of(again) == start == project.head("orch/t1")
    assert (again / "a.txt").read_text() == "one\n"
    assert not (again / "new.txt").exists() and not (again / "stray.txt").exists()
    assert project.list_worktrees() == [again]
    assert project.list_orch_branches("orch") == ["orch/t1"]


def test_add_worktree_over_a_plain_leftover_folder(project: GitRepo) -> None:
    leftover = project.worktree_path("t1")
    leftover.mkdir(parents=True)
    (leftover / "junk.txt").write_text("junk\n")
    with pytest.raises(GitError, match="not a git repository"):
        project.head_of(leftover)  # not the user's HEAD
    path = project.add_worktree("t1", "orch/t1", project.head())
    assert not (path / "junk.txt").exists() and (path / "a.txt").exists()


def test_remove_worktree_and_again(project: GitRepo) -> None:
    change(project, "t1", {"a.txt": "x\n"})
    project.remove_worktree("t1", "orch/t1")
    project.remove_worktree("t1", "orch/t1")
    assert not project.worktree_path("t1").exists()
    assert not project.branch_exists("orch/t1")
    assert project.list_worktrees() == [] and project.list_orch_branches("orch") == []


def test_worktrees_have_a_git_dir_of_their_own(project: GitRepo) -> None:
    """Claude Code's Bash sandbox makes and removes placeholders (config.lock among them) in the
    ``.git`` of the folder a command runs in, around every command. Sharing the project's ``.git``,
    parallel workers broke each other's sandbox start-up; the user's config writes failed meanwhile."""
    config = project.path / ".git" / "config"
    before = config.stat().st_mtime_ns, config.read_bytes()
    lock = project.path / ".git" / "config.lock"
    lock.touch()  # as a sandbox (or the user's `git config`) holds it for a moment
    worktree, commit = change(project, "t1", {"a.txt": "x\n"})
    assert (worktree / ".git").is_dir() and project.branch_exists("orch/t1")
    assert project.head("orch/t1") == commit  # the project holds the worktree's commit
    sh(worktree, "config", "user.name", "an agent")  # the worktree's own config, not the project's
    integration = project.add_worktree("int", "orch/int", project.head())
    assert project.merge_branch(integration, "orch/t1", "merge t1") == []
    assert project.head("orch/int") == project.head_of(integration)
    assert len(sh(project.path, "worktree", "list").splitlines()) == 1  # no linked worktrees
    project.remove_worktree("t1", "orch/t1")
    project.remove_worktree("int")
    assert project.delete_branch("orch/int")  # as the patrol drops a branch left behind
    lock.unlink()
    assert (config.stat().st_mtime_ns, config.read_bytes()) == before
    assert project.list_orch_branches("orch") == [] and project.list_worktrees() == []


def test_a_linked_worktree_of_an_older_version_is_still_removed(project: GitRepo) -> None:
    old = project.worktree_path("t0")
    sh(project.path, "worktree", "add", "-q", "-b", "orch/t0", str(old))
    assert project.list_worktrees() == [old] and project.is_worktree(old)
    (old / "a.txt").write_text("resumed\n")  # a worker resumed in it after the upgrade
    assert project.commit_all(old, "resumed work") == project.head("orch/t0")
    project.remove_worktree("t0", "orch/t0")
    assert not old.exists() and project.list_worktrees() == [] and not project.branch_exists("orch/t0")


def test_delete_branch_keeps_one_checked_out_elsewhere(project: GitRepo, tmp_path: Path) -> None:
    sh(project.path, "worktree", "add", "-q", "-b", "orch/mine", str(tmp_path / "elsewhere"))
    assert not project.delete_branch("orch/mine") and project.branch_exists("orch/mine")
    assert not project.delete_branch("orch/none")


def test_list_worktrees_ignores_the_users_own(project: GitRepo, tmp_path: Path) -> None:
    sh(project.path, "worktree", "add", "-q", "-b", "mine", str(tmp_path / "elsewhere"))
    path = project.add_worktree("t1", "orch/t1", project.head())
    assert project.list_worktrees() == [path]


def test_commit_all(project: GitRepo) -> None:
    worktree = project.add_worktree("t1", "orch/t1", project.head())
    assert project.commit_all(worktree, "nothing") is None
    (worktree / ".orch").mkdir()
    (worktree / ".orch" / "notes.md").write_text("not for the repo\n")
    assert project.commit_all(worktree, "only .orch") is None
    (worktree / "c.txt").write_text("c\n")
    sha = project.commit_all(worktree, "add c\n\nbody")
    assert sha == project.head_of(worktree) == project.head("orch/t1")
    assert (
        sh(worktree, "log", "-1", "--format=%B|%an|%cn")
        == "add c\n\nbody\n|orchestrator|orchestrator"
    )
    assert sh(worktree, "show", "--name-only", "--format=", sha) == "c.txt"
    assert sh(worktree, "ls-files", ".orch") == ""
    assert project.head() != sha  # main is untouched


def test_commit_all_skips_orch_even_if_not_excluded(project: GitRepo) -> None:
    (project.path / ".git" / "info" / "exclude").write_text("")
    worktree = project.add_worktree("t1", "orch/t1", project.head())
    (worktree / ".orch").mkdir()
    (worktree / ".orch" / "notes.md").write_text("not for the repo\n")
    assert project.commit_all(worktree, "only .orch") is None
    (worktree / "c.txt").write_text("c\n")
    sha = project.commit_all(worktree, "add c")
    assert sh(worktree, "show", "--name-only", "--format=", str(sha)) == "c.txt"


def test_diff_summary_and_deleted_files(project: GitRepo) -> None:
    base = project.head()
    worktree, _ = change(project, "t1", {"a.txt": "uno\n", "c.txt": "1\n2\n3\n"}, delete=("b.txt",))
    stat, files, lines = project.diff_summary(worktree, base)
    assert "3 files changed" in stat
    assert sorted(files) == ["a.txt", "b.txt", "c.txt"]
    assert lines == 2 + 3 + 1
    assert project.deleted_files(worktree, base) == ["b.txt"]
    assert "+uno" in project.diff_text(worktree, base)


def test_merge_without_conflict(project: GitRepo) -> None:
    base = project.head()
    change(project, "t1", {"a.txt": "one\nmore\n"})
    change(project, "t2", {"c.txt": "c\n"})
    integration = project.add_worktree("int", "orch/int", base)
    assert project.merge_branch(integration, "orch/t1", "merge t1") == []
    assert project.merge_branch(integration, "orch/t2", "merge t2") == []
    assert (integration / "c.txt").exists() and (integration / "a.txt").read_text() == "one\nmore\n"
    parents = sh(integration, "log", "-1", "--format=%P %s %cn").split()
    assert len(parents) == 5 and parents[2:] == ["merge", "t2", "orchestrator"]
    assert project.head() == base


def test_merge_with_conflict_then_conclude(project: GitRepo) -> None:
    change(project, "t1", {"a.txt": "from t1\n"})
    change(project, "t2", {"a.txt": "from t2\n", "d.txt": "d\n"})
    integration = project.add_worktree("int", "orch/int", project.head())
    assert project.merge_branch(integration, "orch/t1", "merge t1") == []
    assert project.merge_branch(integration, "orch/t2", "merge t2") == ["a.txt"]
    assert project.conflict_markers(integration, ["a.txt", "d.txt", "gone.txt"]) == ["a.txt"]
    assert ">>>>>>> orch/t2\n" in (integration / "a.txt").read_text()  # as the resolver is told
    (integration / "a.txt").write_text("from t1\nfrom t2\n")
    assert project.conflict_markers(integration, ["a.txt"]) == []
    sha = project.conclude_merge(integration)
    assert sha == project.head_of(integration)
    assert len(sh(integration, "log", "-1", "--format=%P").split()) == 2
    assert sh(integration, "log", "-1", "--format=%s") == "merge t2"
    assert sh(integration, "status", "--porcelain") == ""
    with pytest.raises(GitError, match="no merge in progress"):
        project.conclude_merge(integration)


def test_abort_merge(project: GitRepo) -> None:
    change(project, "t1", {"a.txt": "from t1\n"})
    change(project, "t2", {"a.txt": "from t2\n"})
    integration = project.add_worktree("int", "orch/int", project.head("orch/t1"))
    before = project.head_of(integration)
    assert project.merge_branch(integration, "orch/t2", "merge t2") == ["a.txt"]
    project.abort_merge(integration)
    project.abort_merge(integration)  # nothing in progress: no error
    assert project.head_of(integration) == before
    assert sh(integration, "status", "--porcelain") == ""


def test_merge_of_unknown_branch_raises(project: GitRepo) -> None:
    integration = project.add_worktree("int", "orch/int", project.head())
    with pytest.raises(GitError) as exc:
        project.merge_branch(integration, "orch/nope", "merge")
    assert "orch/nope" in one_line_naming(exc, project.path)


def test_conflict_markers_each_kind(project: GitRepo, tmp_path: Path) -> None:
    cases = {
        "open": "x\n<<<<<<< HEAD\n",
        "middle": "x\n=======\n",
        "close": ">>>>>>> branch\r\n",
        "clean": "x\n======= not a marker\n<<<<<<<no space\n  >>>>>>> indented\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert project.conflict_markers(tmp_path, list(cases)) == ["open", "middle", "close"]


def test_reset_worktree_to(project: GitRepo) -> None:
    base = project.head()
    worktree, _ = change(project, "t1", {"a.txt": "changed\n"})
    (worktree / "untracked.txt").write_text("u\n")
    (worktree / "ignored.log").write_text("i\n")
    project.reset_worktree_to(worktree, base)
    assert project.head_of(worktree) == base
    assert sorted(p.name for p in worktree.iterdir()) == [".git", ".gitignore", "a.txt", "b.txt"]


def test_worktree_changes_refused_outside_orch_worktrees(project: GitRepo) -> None:
    (project.path / "a.txt").write_text("the user's work\n")
    with pytest.raises(GitError) as exc:
        project.reset_worktree_to(project.path, project.head())
    one_line_naming(exc, project.path)
    plain = project.worktree_path("plain")  # inside the user's checkout, but no worktree
    plain.mkdir(parents=True)
    for act in (
        lambda: project.reset_worktree_to(plain, project.head()),
        lambda: project.commit_all(plain, "x"),
        lambda: project.merge_branch(plain, "main", "x"),
    ):
        with pytest.raises(GitError, match="not an orchestrator worktree"):
            act()
    assert (project.path / "a.txt").read_text() == "the user's work\n"


def test_is_ancestor(project: GitRepo) -> None:
    base = project.head()
    _, sha = change(project, "t1", {"a.txt": "x\n"})
    assert project.is_ancestor(base, sha) and project.is_ancestor(base, base)
    assert not project.is_ancestor(sha, base)
    with pytest.raises(GitError):
        project.is_ancestor("0" * 40, base)


# advance_main ----------------------------------------------------------------


def test_advance_main_fast_forwards_the_users_clean_checkout(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n", "new.txt": "new\n"})
    assert project.advance_main(new, old) == (True, "")
    assert project.head() == new
    assert (project.path / "a.txt").read_text() == "merged\n"
    assert (project.path / "new.txt").read_text() == "new\n"
    assert sh(project.path, "status", "--porcelain") == ""


def test_advance_main_waits_for_uncommitted_change_it_would_touch(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    (project.path / "a.txt").write_text("user's edit\n")
    moved, reason = project.advance_main(new, old)
    assert not moved
    assert "uncommitted changes in a.txt would be touched" in reason
    assert (project.path / "a.txt").read_text() == "user's edit\n"
    assert project.head() == old


def test_advance_main_waits_while_the_users_index_is_locked(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    lock = project.path / ".git" / "index.lock"  # a git command of the user's is running, or died
    lock.write_text("")
    moved, reason = project.advance_main(new, old)
    assert not moved and "index.lock" in reason and reason.endswith("main will advance in a later cycle")
    assert project.head() == old and lock.exists()
    lock.unlink()
    assert project.advance_main(new, old) == (True, "")


def test_advance_main_waits_for_a_staged_rename_of_a_file_it_touches(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    (project.path / "a.txt").write_text("one\nmore of mine\n")
    sh(project.path, "mv", "a.txt", "renamed a.txt")
    moved, reason = project.advance_main(new, old)
    assert not moved and "a.txt" in reason
    assert (project.path / "renamed a.txt").read_text() == "one\nmore of mine\n"
    assert project.head() == old


@pytest.mark.parametrize("name", ["new.txt", "debug.log"])
def test_advance_main_waits_for_untracked_or_ignored_file_it_would_add(
    project: GitRepo, name: str
) -> None:
    old = project.head()
    worktree = project.add_worktree("t1", "orch/t1", old)
    (worktree / name).write_text("from the branch\n")
    sh(worktree, "add", "-f", name)
    sh(worktree, "commit", "-q", "-m", "add file")  # as an agent may, ignored file and all
    assert project.commit_all(worktree, "nothing left") is None  # the project gets the commit
    (project.path / name).write_text("the user's own\n")
    moved, reason = project.advance_main(project.head_of(worktree), old)
    assert not moved and name in reason
    assert (project.path / name).read_text() == "the user's own\n"
    assert project.head() == old


def test_advance_main_keeps_unrelated_local_changes(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    (project.path / "notes.txt").write_text("mine\n")
    (project.path / "b.txt").write_text("my edit\n")
    assert project.advance_main(new, old) == (True, "")
    assert (project.path / "a.txt").read_text() == "merged\n"
    assert (project.path / "notes.txt").read_text() == "mine\n"
    assert (project.path / "b.txt").read_text() == "my edit\n"


def test_advance_main_moves_only_the_ref_when_user_is_on_another_branch(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    sh(project.path, "checkout", "-q", "-b", "feature")
    (project.path / "a.txt").write_text("feature work\n")
    sh(project.path, "commit", "-qam", "feature")
    (project.path / "b.txt").write_text("uncommitted\n")
    feature = project.head("feature")
    assert project.advance_main(new, old) == (True, "")
    assert project.head() == new
    assert sh(project.path, "branch", "--show-current") == "feature"
    assert project.head("feature") == feature
    assert (project.path / "a.txt").read_text() == "feature work\n"
    assert (project.path / "b.txt").read_text() == "uncommitted\n"


def test_advance_main_with_detached_head(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    sh(project.path, "checkout", "-q", "--detach")
    reopened = GitRepo(project.path)
    assert reopened.main == "main"
    assert reopened.advance_main(new, old) == (True, "")
    assert reopened.head() == new and reopened.head("HEAD") == old
    assert (project.path / "a.txt").read_text() == "one\n"


def test_advance_main_in_the_users_other_worktree(project: GitRepo, tmp_path: Path) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    sh(project.path, "checkout", "-q", "-b", "side")
    elsewhere = tmp_path / "main-checkout"
    sh(project.path, "worktree", "add", "-q", str(elsewhere), "main")
    (elsewhere / "a.txt").write_text("edit in the other checkout\n")
    moved, reason = project.advance_main(new, old)
    assert not moved and "a.txt" in reason and project.head() == old
    sh(elsewhere, "checkout", "-q", "--", "a.txt")
    assert project.advance_main(new, old) == (True, "")
    assert (elsewhere / "a.txt").read_text() == "merged\n"


def test_advance_main_when_main_moved(project: GitRepo) -> None:
    old = project.head()
    _, new = change(project, "t1", {"a.txt": "merged\n"})
    (project.path / "b.txt").write_text("user commit\n")
    sh(project.path, "commit", "-qam", "user moved main")
    users = project.head()
    moved, reason = project.advance_main(new, old)
    assert not moved and reason.startswith("main moved since the cycle started")
    assert project.head() == users


def test_advance_main_refuses_a_non_fast_forward(project: GitRepo) -> None:
    _, first = change(project, "t1", {"a.txt": "x\n"})
    _, second = change(project, "t2", {"a.txt": "y\n"})
    with pytest.raises(GitError, match="does not descend") as exc:
        project.advance_main(second, first)
    one_line_naming(exc, project.path)


# remotes -----------------------------------------------------------------------


def test_push_main_to_a_bare_remote(project: GitRepo, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    assert not project.has_remote()
    sh(project.path, "remote", "add", "origin", str(remote))
    assert project.has_remote() and not project.has_remote("upstream")
    project.push_main()
    assert sh(remote, "rev-parse", "main") == project.head()


def test_push_failure_is_one_line(project: GitRepo, tmp_path: Path) -> None:
    sh(project.path, "remote", "add", "origin", str(tmp_path / "missing.git"))
    with pytest.raises(GitError) as exc:
        project.push_main()
    assert "git push" in one_line_naming(exc, project.path)


# opening a project ---------------------------------------------------------------


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository") as exc:
        GitRepo(tmp_path)
    one_line_naming(exc, tmp_path)
    with pytest.raises(GitError, match="no such folder") as exc:
        GitRepo(tmp_path / "missing")
    one_line_naming(exc, tmp_path / "missing")


def test_no_commits(tmp_path: Path) -> None:
    sh(tmp_path, "init", "-q", "-b", "main")
    with pytest.raises(GitError, match="has no commits: make a first commit") as exc:
        GitRepo(tmp_path)
    one_line_naming(exc, tmp_path)


def test_no_main_or_master(tmp_path: Path) -> None:
    sh(tmp_path, "init", "-q", "-b", "trunk")
    sh(tmp_path, "commit", "-q", "--allow-empty", "-m", "first")
    with pytest.raises(GitError, match="no main or master branch: set main_branch") as exc:
        GitRepo(tmp_path)
    one_line_naming(exc, tmp_path)
    assert GitRepo(tmp_path, main_branch="trunk").main == "trunk"
    with pytest.raises(GitError, match="'develop' does not exist"):
        GitRepo(tmp_path, main_branch="develop")


def test_master_is_found(tmp_path: Path) -> None:
    sh(tmp_path, "init", "-q", "-b", "master")
    sh(tmp_path, "commit", "-q", "--allow-empty", "-m", "first")
    assert GitRepo(tmp_path).main == "master"


def test_command_failure_names_repo_and_command(project: GitRepo) -> None:
    with pytest.raises(GitError) as exc:
        project.head("no-such-branch")
    message = one_line_naming(exc, project.path)
    assert "git rev-parse" in message and "failed:" in message


def test_a_worktree_left_off_its_branch_is_one_error_naming_it(project: GitRepo) -> None:
    worktree = project.add_worktree("t1", "orch/t1", project.head())
    sh(worktree, "checkout", "-q", "--detach")  # as an agent might
    (worktree / "a.txt").write_text("lost?\n")
    with pytest.raises(GitError) as exc:
        project.commit_all(worktree, "change")
    assert "HEAD is not on the worktree's branch" in one_line_naming(exc, worktree)
