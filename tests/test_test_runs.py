"""A project's test runs: kept by tree, command and environment, and only so many at once."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.models import CheckResult, WorkResult
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.judge import baseline, run_tests
from orchestrator.stages.refinery import MergedTests
from orchestrator.stages.test_runs import batch_first, environment_digest

pytestmark = pytest.mark.guarantee

GREEN = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertTrue(True)\n"
RED = GREEN.replace("assertTrue(True)", "assertTrue(False)")


def project(tmp_path: Path, files: dict[str, str] | None = None, **settings: object) -> tuple[ProjectContext, Path]:
    """A project whose test command counts its runs in a file outside the repository."""
    runs = tmp_path / "runs"
    init_repo(tmp_path / "app", {"test_x.py": GREEN, ".gitignore": "__pycache__/\n", **(files or {})})
    command = f"echo run >> {runs}; {sys.executable} -m unittest -q"
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "test_command": command, **settings}]}))
    return ctx_of(config), runs


def ctx_of(config: Path) -> ProjectContext:
    return ProjectContext.open(ProjectRef(project="app", config_path=str(config)))


def count(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def commit_in(ctx: ProjectContext, name: str, files: dict[str, str]) -> Path:
    """A worktree of main with ``files`` written and committed."""
    worktree = ctx.repo.add_worktree(name, ctx.branch(name), ctx.repo.head())
    for path, text in files.items():
        (worktree / path).write_text(text)
    ctx.repo.commit_all(worktree, f"change {name}")
    return worktree


def test_a_base_tested_once_is_not_tested_again_by_the_next_cycle_or_the_merge(tmp_path: Path) -> None:
    ctx, runs = project(tmp_path)
    main = ctx.repo.head()
    first = baseline(ctx, "c1", main)
    assert first.tests is not None and first.tests.passed and not first.tests.reused and count(runs) == 1
    again = baseline(ctx, "c2", main)  # the next cycle, main unmoved
    assert again.tests is not None and again.tests.passed and again.tests.reused and count(runs) == 1
    # The merge's check of a result whose tree is main's, and main's own failures, run nothing either.
    merged = ctx.repo.add_worktree("integration-c3", ctx.branch("integration-c3"), main)
    check = MergedTests(ctx, "c3", main)
    assert check.check(merged) == (True, "") and check.main_failures == [] and count(runs) == 1
    # Another tree is tested; then it too is known, whichever worktree holds it.
    branch = commit_in(ctx, "t1", {"more.py": "x = 1\n"})
    assert run_tests(ctx, branch).passed and count(runs) == 2
    ctx.repo.reset_worktree_to(merged, ctx.repo.head_of(branch))
    assert check.check(merged) == (True, "") and count(runs) == 2


def test_another_environment_or_command_tests_again_but_a_run_id_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, runs = project(tmp_path)
    worktree = ctx.base_worktree("c1", ctx.repo.head())
    run_tests(ctx, worktree)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "another run")  # changes nothing the tests see
    monkeypatch.setenv("OLDPWD", "/somewhere")
    assert run_tests(ctx, worktree).reused and count(runs) == 1
    monkeypatch.setenv("DATABASE_URL", "sqlite:///other.db")  # may change what the tests see
    assert not run_tests(ctx, worktree).reused and count(runs) == 2
    assert environment_digest({"A": "1"}) != environment_digest({"A": "2"})
    config = json.loads((tmp_path / "portfolio.json").read_text())
    config["projects"][0]["test_command"] += " -v"
    (tmp_path / "portfolio.json").write_text(json.dumps(config))
    assert not run_tests(ctx_of(tmp_path / "portfolio.json"), worktree).reused and count(runs) == 3


def test_a_worktree_with_files_git_does_not_hold_is_tested_and_not_kept(tmp_path: Path) -> None:
    ctx, runs = project(tmp_path)
    worktree = commit_in(ctx, "t1", {"more.py": "x = 1\n"})
    (worktree / "stray.py").write_text("y = 2\n")  # untracked, not ignored: it may change the result
    run_tests(ctx, worktree)
    run_tests(ctx, worktree)
    assert count(runs) == 2
    (worktree / "stray.py").unlink()
    (worktree / "more.py").write_text("x = 3\n")  # a change to a tracked file, not committed
    run_tests(ctx, worktree)
    assert count(runs) == 3
    (worktree / "more.py").write_text("x = 1\n")
    (worktree / "__pycache__").mkdir(exist_ok=True)  # ignored files do not count
    (worktree / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    run_tests(ctx, worktree)
    assert run_tests(ctx, worktree).reused and count(runs) == 4


def test_only_final_results_are_kept(tmp_path: Path) -> None:
    ctx, runs = project(tmp_path, {"test_x.py": RED})
    worktree = ctx.base_worktree("c1", ctx.repo.head())
    # A first failure the judge would not run again (its failures would not count) is not final.
    first = run_tests(ctx, worktree, confirm=lambda _: False)
    assert first is not None and not first.passed and count(runs) == 1
    # One the retries confirmed is, and comes back as it was.
    confirmed = run_tests(ctx, worktree)
    assert confirmed is not None and confirmed.runs == 2 and count(runs) == 3
    reused = run_tests(ctx, worktree)
    assert reused is not None and reused.reused and not reused.passed and reused.runs == 2
    assert reused.failed_tests == confirmed.failed_tests and count(runs) == 3


def test_a_timed_out_run_is_not_kept(tmp_path: Path) -> None:
    ctx, runs = project(tmp_path, test_timeout_seconds=1)
    config = json.loads((tmp_path / "portfolio.json").read_text())
    config["projects"][0]["test_command"] = f"echo run >> {runs}; sleep 5"
    (tmp_path / "portfolio.json").write_text(json.dumps(config))
    ctx = ctx_of(tmp_path / "portfolio.json")
    worktree = ctx.base_worktree("c1", ctx.repo.head())
    assert run_tests(ctx, worktree).timed_out
    assert run_tests(ctx, worktree).timed_out and count(runs) == 2


def test_results_expire_and_can_be_turned_off(tmp_path: Path) -> None:
    ctx, runs = project(tmp_path)
    worktree = ctx.base_worktree("c1", ctx.repo.head())
    run_tests(ctx, worktree)
    ctx.store.db.execute("UPDATE test_results SET tested_at = '2026-01-01T00:00:00+00:00'")
    ctx.store.db.conn.commit()
    assert not run_tests(ctx, worktree).reused and count(runs) == 2  # too old: tested again, kept anew
    assert run_tests(ctx, worktree).reused and count(runs) == 2
    config = json.loads((tmp_path / "portfolio.json").read_text())
    config["projects"][0]["test_cache"] = False
    (tmp_path / "portfolio.json").write_text(json.dumps(config))
    off = ctx_of(tmp_path / "portfolio.json")
    assert not run_tests(off, worktree).reused and count(runs) == 3


def spans(log: Path) -> list[tuple[float, float]]:
    """(start, end) of each test run, from the lines the command wrote."""
    times = [line.split() for line in log.read_text().splitlines()]
    starts = sorted(float(t) for kind, t in times if kind == "start")
    ends = sorted(float(t) for kind, t in times if kind == "end")
    return list(zip(starts, ends, strict=True))


@pytest.mark.parametrize("limit", [1, 2])
def test_a_projects_test_runs_take_turns_beyond_max_parallel_tests(tmp_path: Path, limit: int) -> None:
    log = tmp_path / "log"
    command = f"echo start $(date +%s.%N) >> {log}; sleep 1; echo end $(date +%s.%N) >> {log}"
    ctx, _ = project(tmp_path, test_command=command, max_parallel_tests=limit)
    trees = [commit_in(ctx, f"t{i}", {f"m{i}.py": f"x = {i}\n"}) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:  # as the judges of three branches run their tests
        assert all(r.passed for r in pool.map(lambda w: run_tests(ctx, w), trees))
    ran = spans(log)
    overlapping = max(sum(1 for s, e in ran if s <= t < e) for t, _ in ran)
    assert len(ran) == 3 and overlapping == limit, ran


def test_the_same_tree_asked_for_twice_at_once_is_tested_once(tmp_path: Path) -> None:
    ctx, runs = project(tmp_path, max_parallel_tests=1)
    worktrees = [ctx.base_worktree("c1", ctx.repo.head()),
                 ctx.repo.add_worktree("integration-c1", ctx.branch("integration-c1"), ctx.repo.head())]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda w: run_tests(ctx, w), worktrees))
    assert count(runs) == 1 and sorted(r.reused for r in results) == [False, True]


def history(ctx: ProjectContext, suite_s: float, worker_s: float, n: int = 3) -> None:
    """``n`` kept test runs of ``suite_s`` and worker sessions of ``worker_s``, as cycles leave them."""
    for i in range(n):
        result = CheckResult(command="t", ran=True, passed=True, exit_code=0, duration_s=suite_s)
        ctx.store.record_tested(f"key-{i}", f"tree-{i}", result, forget_before="2000-01-01")
        ctx.store.record_work(WorkResult(task_id=f"t{i}", cycle_id="c", attempt=1, branch="b", base_commit="x",
                                         success=True, duration_s=worker_s))


@pytest.mark.parametrize(("strategy", "suite_s", "worker_s", "branches", "batch"), [
    ("batch", None, None, 3, True),
    ("per_branch", 600.0, 10.0, 8, False),
    ("auto", None, None, 8, False),  # nothing measured yet: each branch is tested
    ("auto", 3.0, 40.0, 3, False),  # a 3 s suite, 2 at once: 6 s against a 40 s session
    ("auto", 3.0, 40.0, 16, True),  # 8 rounds of 3 s: 24 s, over half a session
    ("auto", 60.0, 40.0, 1, True),  # a one-minute suite outlasts the session
])
def test_auto_tests_in_a_batch_once_testing_each_branch_costs_half_a_session(
        tmp_path: Path, strategy: str, suite_s: float | None, worker_s: float | None, branches: int,
        batch: bool) -> None:
    ctx, _ = project(tmp_path, test_strategy=strategy, max_parallel_tests=2)
    if suite_s is not None and worker_s is not None:
        history(ctx, suite_s, worker_s)
    assert batch_first(ctx, branches) is batch


def test_branches_bound_for_pull_requests_are_always_tested_one_by_one(tmp_path: Path) -> None:
    ctx, _ = project(tmp_path, test_strategy="batch", merge_strategy="pr")
    assert batch_first(ctx, 3) is False  # no merge here would test them
