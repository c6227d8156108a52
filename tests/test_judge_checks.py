"""The test gate when the base already fails: failing tests compared by id, failing closed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orchestrator.adapters.checks import confirmed, run_check
from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.models import Baseline
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.judge import baseline, failed_checks
from orchestrator.stages.refinery import MergedTests

pytestmark = pytest.mark.guarantee

UNITTEST = f"{sys.executable} -m unittest -q"
PYTEST = f"{sys.executable} -m pytest -q -p no:cacheprovider"


def suite(*failing: str) -> str:
    """A test module where the named tests fail and the others pass."""
    lines = ["import unittest", "", "", "class T(unittest.TestCase):"]
    for name in ("test_a", "test_b", "test_c"):
        lines += [f"    def {name}(self):", f"        self.assertTrue({name not in failing})", ""]
    return "\n".join(lines)


def checked(folder: Path, command: str, *failing: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_x.py").write_text(suite(*failing))
    return run_check(command, folder, timeout_s=60)


@pytest.mark.parametrize(("command", "ids"), [
    (UNITTEST, ["test_b (test_x.T.test_b)", "test_c (test_x.T.test_c)"]),
    (PYTEST, ["test_x.py::T::test_b", "test_x.py::T::test_c"]),
])
def test_failing_tests_are_read_from_real_runs(tmp_path: Path, command: str, ids: list[str]) -> None:
    result = checked(tmp_path, command, "test_b", "test_c")
    assert not result.passed and result.failed_tests == ids
    assert checked(tmp_path / "green", command).failed_tests is None


def test_old_failures_do_not_block_and_new_ones_do(tmp_path: Path) -> None:
    base = Baseline(commit="b", tests=checked(tmp_path / "base", UNITTEST, "test_b"))
    same = checked(tmp_path / "same", UNITTEST, "test_b")
    assert failed_checks(base, same, None) == []
    worse = checked(tmp_path / "worse", UNITTEST, "test_b", "test_c")
    assert failed_checks(base, worse, None) == ["tests that pass on the base fail on the branch: test_c (test_x.T.test_c)"]


def test_failures_that_cannot_be_told_apart_fail_closed(tmp_path: Path) -> None:
    opaque = "echo something broke; exit 1"
    base = Baseline(commit="b", tests=run_check(opaque, tmp_path, 60))
    [reason] = failed_checks(base, run_check(opaque, tmp_path, 60), None)
    assert "cannot be told apart" in reason


def test_a_merged_result_may_keep_mains_own_failures_but_add_none(tmp_path: Path) -> None:
    init_repo(tmp_path / "app", {"test_x.py": suite("test_b")})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "test_command": UNITTEST}]}))
    ctx = ProjectContext.open(ProjectRef(project="app", config_path=str(config)))
    main = ctx.repo.head()
    tests = MergedTests(ctx, "c1", main)
    merged = ctx.repo.add_worktree("integration-c1", ctx.branch("integration-c1"), main)
    assert tests.check(merged) == (True, "")  # main fails test_b already
    (merged / "test_x.py").write_text(suite("test_b", "test_c"))
    passed, output = tests.check(merged)
    assert not passed and "test_c" in output
    assert tests.main_failures == ["test_b (test_x.T.test_b)"]
    assert [p.name for p in ctx.repo.list_worktrees()] == ["integration-c1"]  # main's checkout is gone


# -- flaky tests: run again before they count ------------------------------------


def flaky_suite(marker: Path, always: tuple[str, ...] = (), once: tuple[str, ...] = ()) -> str:
    """Tests in ``always`` fail every run; those in ``once`` fail on the first run only (it leaves ``marker``)."""
    lines = ["import os", "import unittest", "", f"FIRST = not os.path.exists({str(marker)!r})",
             f"open({str(marker)!r}, 'a').close()", "", "", "class T(unittest.TestCase):"]
    for name in ("test_a", "test_b", "test_c"):
        fails = f"{name in always} or ({name in once} and FIRST)"
        lines += [f"    def {name}(self):", f"        self.assertFalse({fails})", ""]
    return "\n".join(lines)


def first_and_again(folder: Path, suite_text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_x.py").write_text(suite_text)
    return run_check(UNITTEST, folder, 60), lambda: run_check(UNITTEST, folder, 60)


GREEN_BASE = Baseline(commit="b")  # no test command on the base: any failure rejects


def test_a_test_that_fails_then_passes_is_flaky_and_rejects_nothing(tmp_path: Path) -> None:
    first, again = first_and_again(tmp_path, flaky_suite(tmp_path / "ran", once=("test_c",)))
    assert not first.passed and failed_checks(GREEN_BASE, first, None)
    tests = confirmed(first, again, retries=1)
    assert tests.passed and tests.runs == 2 and tests.flaky
    assert tests.flaky_tests == ["test_c (test_x.T.test_c)"]
    assert failed_checks(GREEN_BASE, tests, None) == []


def test_without_retries_a_flaky_failure_rejects(tmp_path: Path) -> None:
    first, again = first_and_again(tmp_path, flaky_suite(tmp_path / "ran", once=("test_c",)))
    assert confirmed(first, again, retries=0) is first
    assert failed_checks(GREEN_BASE, first, None)


def test_a_test_that_fails_every_time_still_rejects_and_the_flaky_one_is_named(tmp_path: Path) -> None:
    first, again = first_and_again(tmp_path, flaky_suite(tmp_path / "ran", always=("test_b",), once=("test_c",)))
    tests = confirmed(first, again, retries=2)
    assert not tests.passed and tests.runs == 3
    assert (tests.failed_tests, tests.flaky_tests) == (["test_b (test_x.T.test_b)"], ["test_c (test_x.T.test_c)"])
    [reason] = failed_checks(GREEN_BASE, tests, None)
    assert "test_b" in reason and "test_c" not in reason


def test_a_test_run_that_timed_out_is_not_run_again(tmp_path: Path) -> None:
    hung = run_check("sleep 5", tmp_path, timeout_s=0.5)
    assert confirmed(hung, lambda: pytest.fail("a hang was run again"), retries=3) is hung


def test_tests_flaky_on_main_are_kept_for_status_and_cleared_when_steady(tmp_path: Path) -> None:
    init_repo(tmp_path / "app", {"test_x.py": flaky_suite(tmp_path / "ran", once=("test_a",))})
    config = tmp_path / "portfolio.json"
    # Every baseline runs (the second would otherwise take the first's result, flake and all).
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "test_command": UNITTEST,
                                                "test_cache": False}]}))
    with ProjectContext.open(ProjectRef(project="app", config_path=str(config))) as ctx:
        main = ctx.repo.head()
        base = baseline(ctx, "c1", main)
        assert base.tests is not None and base.tests.passed  # a flake fails no branch either
        state = ctx.store.state()
        assert (state.flaky_on_main, state.flaky_on_main_commit) == (["test_a (test_x.T.test_a)"], main)
        assert baseline(ctx, "c2", main).tests.runs == 1  # passes at once now
        assert ctx.store.state().flaky_on_main == []


PRIORITY = (f"{sys.executable} -c 'import os; print(\"nice\", os.nice(0))'; "
            "test -e /proc/self/autogroup && sed -n 's/.* nice /group /p' /proc/self/autogroup; true")


def test_the_baselines_checks_run_niced_and_a_branchs_do_not(tmp_path: Path) -> None:
    # Beside the workers, the base's checks take the CPU the agents leave idle.
    init_repo(tmp_path / "app", {"README.md": "app\n"})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "test_command": PRIORITY,
                                                "lint_command": PRIORITY}]}))
    with ProjectContext.open(ProjectRef(project="app", config_path=str(config))) as ctx:
        base = baseline(ctx, "c1", ctx.repo.head())
        assert base.tests is not None and base.lint is not None
        for check in (base.tests, base.lint):
            assert "nice 10" in check.output
            if Path("/proc/self/autogroup").exists():  # Linux schedules sessions as groups: the group too
                assert "group 10" in check.output
    branch = run_check(PRIORITY, tmp_path, 60)
    assert "nice 0" in branch.output and "group 10" not in branch.output


def test_a_flaky_merged_result_blames_no_branch(tmp_path: Path) -> None:
    init_repo(tmp_path / "app", {"test_x.py": suite()})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "test_command": UNITTEST}]}))
    with ProjectContext.open(ProjectRef(project="app", config_path=str(config))) as ctx:
        main = ctx.repo.head()
        merged = ctx.repo.add_worktree("integration-c1", ctx.branch("integration-c1"), main)
        (merged / "test_x.py").write_text(flaky_suite(tmp_path / "ran", once=("test_b",)))
        tests = MergedTests(ctx, "c1", main)
        passed, _ = tests.check(merged)
        assert not passed  # one run failed: doubtful, so run again before it blames a merge
        assert tests.again(merged) == (True, "")
