"""The merge stage in whole cycles: conflicts go to the resolver; main only gets what passes as merged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cycles import failing_first, run_cycle, use_model

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.store import Store
from orchestrator.demo.scripted import RequestView, Scenario, ScriptedModel, structured, write
from orchestrator.domain.models import TaskStatus, TaskWait

pytestmark = [pytest.mark.guarantee, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

BASE = "VERSION = 1\n\n\ndef add(a, b):\n    return a + b\n"
TESTS = "import unittest\n\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n"
SUBTRACT = "\n\ndef subtract(a, b):\n    return a - b\n"
MULTIPLY = "\n\ndef multiply(a, b):\n    return a * b\n"


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def task(title: str, priority: int) -> dict:
    return {"title": title, "description": f"{title} in calc.py.", "type": "code", "priority": priority}


def plan(*tasks: dict) -> list:
    return [[structured({"findings": "f", "proposal": "p", "tasks": list(tasks)})]]


def done(summary: str) -> list:
    return [structured({"summary": summary, "completed": True})]


def setup(tmp_path: Path) -> tuple[Path, Path]:
    project = tmp_path / "calc"
    init_repo(project, {"calc.py": BASE, "test_calc.py": TESTS})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"data_dir": "data", "projects": [{
        "name": "calc", "path": "calc", "test_command": f"{sys.executable} -m unittest -q",
    }]}))
    return project, config


def conflicting(resolver: list) -> Scenario:
    """Two tasks that append to the same place in calc.py: the second merge conflicts."""
    return Scenario(
        planner=plan(task("Add subtract", 1), task("Add multiply", 2)),
        workers={
            "Add subtract": [[write("calc.py", BASE + SUBTRACT)], done("subtract")],
            "Add multiply": [[write("calc.py", BASE + MULTIPLY)], done("multiply")],
        },
        resolver=resolver,
    )


def resolve_both(view: RequestView) -> list[dict]:
    # The resolver sees the conflicted file in its worktree and writes both sides.
    conflicted = (view.cwd / "calc.py").read_text()
    assert "<<<<<<<" in conflicted
    return [write("calc.py", BASE + SUBTRACT + MULTIPLY)]


def test_conflict_goes_to_the_resolver_and_both_branches_merge(tmp_path: Path, monkeypatch) -> None:
    project, config = setup(tmp_path)
    scenario = conflicting(resolver=[resolve_both, [structured({"summary": "kept both", "resolved": True})]])
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    assert len(summary.merged) == 2
    main_calc = git(project, "show", "main:calc.py")
    assert "def subtract" in main_calc and "def multiply" in main_calc and "<<<<<<<" not in main_calc
    assert [r.role for r in model.requests].count("resolver") == 2
    assert summary.cost_by_role["resolver"] == pytest.approx(model.cost_usd("resolver"), abs=1e-9)
    merges = (project / ".orch" / "merges" / f"cycle_{summary.cycle_id}.md").read_text()
    assert "Conflicts resolved by the resolver" in merges and "None." not in merges.split("resolver")[-1]


def test_a_resolver_the_api_kept_failing_leaves_the_branch_waiting_with_its_attempt(tmp_path: Path, monkeypatch) -> None:
    project, config = setup(tmp_path)
    data = json.loads(config.read_text())
    data["projects"][0].update(api_retries=0)  # one try: the CLI's request and its own single retry
    config.write_text(json.dumps(data))
    # Both requests of its one try (the CLI's and its own retry) fail.
    scenario = conflicting(resolver=[failing_first(resolve_both, 2), [structured({"summary": "kept both", "resolved": True})]])
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        first = run_cycle(config)
        store = Store.for_project(tmp_path / "data", "calc")
        multiply = next(t for t in store.list_tasks() if t.title == "Add multiply")
        assert (multiply.status, multiply.attempts, multiply.waiting) == (TaskStatus.pending, 0, TaskWait.api), multiply
        assert "waits for the resolver" in multiply.last_failure and first.merged != []
        second = run_cycle(config)
    assert second.merged == [multiply.id] and store.get_task(multiply.id).attempts == 1
    assert "def subtract" in git(project, "show", "main:calc.py") and "def multiply" in git(project, "show", "main:calc.py")
    assert len([r for r in model.requests if r.key == "Add multiply"]) == 2  # its paid work was not redone


def test_unresolved_conflict_is_sent_back_and_never_reaches_main(tmp_path: Path, monkeypatch) -> None:
    project, config = setup(tmp_path)
    # A resolver that claims success but leaves the markers in place.
    scenario = conflicting(resolver=[[structured({"summary": "done", "resolved": True})]])
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    store = Store.for_project(tmp_path / "data", "calc")
    tasks = {t.title: t for t in store.list_tasks()}
    assert tasks["Add subtract"].status is TaskStatus.done
    assert tasks["Add multiply"].status is TaskStatus.pending
    assert "markers left in calc.py" in tasks["Add multiply"].last_failure
    main_calc = git(project, "show", "main:calc.py")
    assert "<<<<<<<" not in main_calc and "def multiply" not in main_calc
    assert summary.merged == [tasks["Add subtract"].id]


def test_branches_that_break_main_together_are_not_both_merged(tmp_path: Path, monkeypatch) -> None:
    project, config = setup(tmp_path)
    pin_version = "import unittest\n\nimport calc\n\n\nclass V(unittest.TestCase):\n    def test_version(self):\n        self.assertEqual(calc.VERSION, 1)\n"
    scenario = Scenario(
        planner=plan(task("Pin the version in a test", 1), task("Bump the version", 2)),
        workers={
            "Pin the version in a test": [[write("test_version.py", pin_version)], done("pinned")],
            "Bump the version": [[write("calc.py", BASE.replace("VERSION = 1", "VERSION = 2"))], done("bumped")],
        },
    )
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    store = Store.for_project(tmp_path / "data", "calc")
    tasks = {t.title: t for t in store.list_tasks()}
    assert sorted(summary.passed) == sorted(t.id for t in tasks.values())  # each passes alone
    assert summary.merged == [tasks["Pin the version in a test"].id]
    assert "tests fail once merged" in tasks["Bump the version"].last_failure
    subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, check=True, capture_output=True)
    assert "VERSION = 1" in git(project, "show", "main:calc.py")
