"""The test gate when the base already fails: failing tests compared by id, failing closed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orchestrator.adapters.checks import run_check
from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.models import Baseline
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.judge import failed_checks
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
