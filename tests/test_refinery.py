"""The merge stage without agents: one test run for N passing branches, a bisection when they fail together."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.models import MergeOutcome, Task, WorkResult
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.refinery import ahead_name, merge, merged_tests_ahead

pytestmark = pytest.mark.guarantee

PIN = "import unittest\n\nimport calc\n\n\nclass V(unittest.TestCase):\n    def test_version(self):\n        self.assertEqual(calc.VERSION, 1)\n"


def project(tmp_path: Path, wait_s: float = 0) -> ProjectContext:
    """A project whose test command also counts its runs in runs.log (after ``wait_s``)."""
    init_repo(tmp_path / "calc", {"calc.py": "VERSION = 1\n", "test_calc.py": "import unittest\n"})
    config = tmp_path / "portfolio.json"
    count = f"sleep {wait_s} && echo run >> {tmp_path / 'runs.log'} && {sys.executable} -m unittest -q"
    config.write_text(json.dumps({"data_dir": "data", "projects": [{"name": "calc", "path": "calc", "test_command": count}]}))
    return ProjectContext.open(ProjectRef(project="calc", config_path=str(config)))


def branch(ctx: ProjectContext, title: str, files: dict[str, str]) -> tuple[Task, WorkResult]:
    """A task whose branch, made from main, changes ``files``: as a worker leaves it."""
    task = Task(title=title, attempts=1)
    base = ctx.repo.head()
    worktree = ctx.repo.add_worktree(task.id, ctx.branch(task.id), base)
    for name, text in files.items():
        (worktree / name).write_text(text)
    commit = ctx.repo.commit_all(worktree, title)
    work = WorkResult(task_id=task.id, cycle_id="c1", attempt=1, branch=ctx.branch(task.id), base_commit=base,
                      commit=commit, success=True)
    return task, work


def neutral(ctx: ProjectContext, i: int) -> tuple[Task, WorkResult]:
    return branch(ctx, f"Add mod_{i}", {f"mod_{i}.py": f"X = {i}\n"})


def count_test_runs(tmp_path: Path) -> int:
    log = tmp_path / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def merged_into_main(ctx: ProjectContext, outcome: MergeOutcome) -> None:
    assert outcome.main_updated and ctx.repo.head() == outcome.main_after
    # The user's checkout of main moved with it, and its tests pass.
    subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=ctx.repo.path, check=True, capture_output=True)


def test_passing_branches_cost_one_test_run(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    candidates = [neutral(ctx, i) for i in range(5)]
    outcome = asyncio.run(merge(ctx, "c1", candidates))
    assert sorted(outcome.merged) == sorted(t.id for t, _ in candidates) and not outcome.rejected
    assert count_test_runs(tmp_path) == 1
    merged_into_main(ctx, outcome)


def test_a_branch_that_breaks_the_merge_is_found_by_bisection(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    # Each passes alone; "Bump" breaks the test "Pin" adds, once both are in.
    candidates = [branch(ctx, "Pin", {"test_pin.py": PIN})] + [neutral(ctx, i) for i in range(3)]
    candidates += [branch(ctx, "Bump", {"calc.py": "VERSION = 2\n"})] + [neutral(ctx, i) for i in range(3, 6)]
    bump = candidates[4][0].id
    outcome = asyncio.run(merge(ctx, "c1", candidates))
    assert sorted(outcome.merged) == sorted(t.id for t, _ in candidates if t.id != bump)
    assert list(outcome.rejected) == [bump] and "tests fail once merged" in outcome.rejected[bump]
    # The whole (1), main's own failures (1), three bisection steps over 8 merges (a step that
    # fails the same test confirms the first failure: no rerun), the rest again (1); one by one
    # would be 9.
    assert count_test_runs(tmp_path) == 6
    merged_into_main(ctx, outcome)
    assert "VERSION = 1" in (ctx.repo.path / "calc.py").read_text()


def test_a_culprit_whose_failure_no_other_run_saw_is_run_again_before_it_is_blamed(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    candidates = [branch(ctx, "Pin", {"test_pin.py": PIN}), neutral(ctx, 0), neutral(ctx, 1),
                  branch(ctx, "Bump", {"calc.py": "VERSION = 2\n"})]
    bump = candidates[-1][0].id
    outcome = asyncio.run(merge(ctx, "c1", candidates))
    assert list(outcome.rejected) == [bump] and sorted(outcome.merged) == sorted(t.id for t, _ in candidates[:3])
    # The whole (1), main (1), two steps that pass (2), and the whole again: only the first run
    # had failed there, so it is confirmed before "Bump" is blamed (1).
    assert count_test_runs(tmp_path) == 5
    merged_into_main(ctx, outcome)


def test_a_flaky_failure_of_the_merged_result_blames_no_branch(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    marker = tmp_path / "ran-once"  # the new test fails on its first run only
    flaky = (f"import os\nimport unittest\n\n\nclass F(unittest.TestCase):\n    def test_once(self):\n"
             f"        first = not os.path.exists({str(marker)!r})\n        open({str(marker)!r}, 'a').close()\n"
             f"        self.assertFalse(first)\n")
    candidates = [branch(ctx, "Flaky", {"test_flaky.py": flaky}), neutral(ctx, 0), neutral(ctx, 1)]
    outcome = asyncio.run(merge(ctx, "c1", candidates))
    assert not outcome.rejected and sorted(outcome.merged) == sorted(t.id for t, _ in candidates)
    assert count_test_runs(tmp_path) == 5  # the whole, main, two steps, the whole again: it passes
    merged_into_main(ctx, outcome)



def test_the_merged_result_tested_ahead_costs_the_merge_no_run(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    candidates = [neutral(ctx, i) for i in range(3)]
    merged_tests_ahead(ctx, "c1", candidates, threading.Event())
    assert count_test_runs(tmp_path) == 1
    assert not ctx.repo.worktree_path(ahead_name("c1")).exists()
    outcome = asyncio.run(merge(ctx, "c1", candidates))
    assert sorted(outcome.merged) == sorted(t.id for t, _ in candidates)
    assert count_test_runs(tmp_path) == 1  # the merge built the same tree, and found its pass
    merged_into_main(ctx, outcome)


def test_a_merge_of_other_branches_tests_for_itself(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    candidates = [neutral(ctx, i) for i in range(3)]
    merged_tests_ahead(ctx, "c1", candidates, threading.Event())
    outcome = asyncio.run(merge(ctx, "c1", candidates[:2]))  # a reviewer rejected the third
    assert len(outcome.merged) == 2 and count_test_runs(tmp_path) == 2


def test_the_merge_waits_for_the_run_ahead(tmp_path: Path) -> None:
    ctx = project(tmp_path, wait_s=2)
    candidates = [neutral(ctx, i) for i in range(2)]
    ahead = threading.Thread(target=merged_tests_ahead, args=(ctx, "c1", candidates, threading.Event()))
    ahead.start()
    time.sleep(0.5)  # under way: the merge asks for the same tree, and waits for its pass
    outcome = asyncio.run(merge(ctx, "c1", candidates))
    ahead.join()
    assert len(outcome.merged) == 2 and count_test_runs(tmp_path) == 1


def test_a_stop_ends_the_run_ahead_at_once_and_keeps_nothing(tmp_path: Path) -> None:
    ctx = project(tmp_path, wait_s=30)
    stop = threading.Event()
    candidates = [neutral(ctx, i) for i in range(2)]
    ahead = threading.Thread(target=merged_tests_ahead, args=(ctx, "c1", candidates, stop))
    started = time.monotonic()
    ahead.start()
    time.sleep(1)
    stop.set()
    ahead.join(10)
    assert not ahead.is_alive() and time.monotonic() - started < 5
    assert count_test_runs(tmp_path) == 0 and not ctx.repo.worktree_path(ahead_name("c1")).exists()


def test_a_conflict_stops_the_run_ahead(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    candidates = [branch(ctx, "One", {"calc.py": "VERSION = 1  # one\n"}), branch(ctx, "Two", {"calc.py": "VERSION = 1  # two\n"})]
    merged_tests_ahead(ctx, "c1", candidates, threading.Event())
    assert count_test_runs(tmp_path) == 0 and not ctx.repo.worktree_path(ahead_name("c1")).exists()


def test_a_branch_gone_meanwhile_ends_the_run_ahead_quietly(tmp_path: Path) -> None:
    ctx = project(tmp_path)
    candidates = [neutral(ctx, i) for i in range(2)]
    rejected = candidates[1][0].id
    ctx.repo.remove_worktree(rejected, ctx.branch(rejected))  # its judge rejected it, and its branch went
    merged_tests_ahead(ctx, "c1", candidates, threading.Event())
    assert count_test_runs(tmp_path) == 0 and not ctx.repo.worktree_path(ahead_name("c1")).exists()
