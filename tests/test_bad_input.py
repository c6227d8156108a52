"""Bad input of every kind: one clear line, a non-zero exit, and nothing written or lost.

The first test runs ``orch`` on bad configs, repositories and arguments and
compares every file under the test folder (config, repository, data dir)
before and after. The cycle tests feed bad model output to a real cycle:
the planner, workers and the judge misbehave, each fault lands on its own
task with a reason, and main keeps only what passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cycles import run_cycle, use_model
from orch_cli import orch

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.store import Store
from orchestrator.demo.scripted import Scenario, ScriptedModel, bash, structured, text, write
from orchestrator.domain.models import Task, TaskStatus

pytestmark = pytest.mark.guarantee

CALC = "def add(a, b):\n    return a + b\n"
TESTS = "import unittest\n\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n"


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a hash of its bytes (SQLite's transient -wal/-shm aside)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def portfolio(tmp_path: Path, data: Any, name: str = "portfolio.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def project(tmp_path: Path, **fields: Any) -> str:
    """A portfolio with one project ``app`` at ./app (a repository with one commit)."""
    if not (tmp_path / "app").exists():
        init_repo(tmp_path / "app", {"calc.py": CALC})
    return portfolio(tmp_path, {"data_dir": "data", "projects": [{"name": "app", "path": "app", **fields}]})


def with_store(tmp_path: Path, *tasks: Task) -> str:
    """A valid portfolio whose project already has state (so a command could spoil it)."""
    config = project(tmp_path)
    store = Store.for_project(tmp_path / "data", "app")
    for task in tasks:
        store.add_task(task)
    store.close()
    return config


def bare_repo(tmp_path: Path, *git_args: str) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", *git_args)
    return path


# Each case: (what it sets up in tmp_path -> the orch arguments, what the one line must say).
Case = tuple[Callable[[Path], list[str]], str]
CASES: dict[str, Case] = {
    # -- the portfolio file
    "config file missing": (lambda t: ["status", "-c", str(t / "nope.json")], "nope.json: file not found"),
    "invalid JSON": (lambda t: ["status", "-c", portfolio(t, '{"projects": [}')], "invalid JSON at line 1, column 15"),
    "top level not an object": (lambda t: ["status", "-c", portfolio(t, "[]")], "top level must be a JSON object"),
    "wrong type": (lambda t: ["run", "-p", "app", "-c", project(t, max_workers="three")],
                   "projects[0] (app).max_workers: input should be a valid integer"),
    "non-positive number": (lambda t: ["run", "-p", "app", "-c", project(t, max_budget_per_task=0)],
                            "projects[0] (app).max_budget_per_task: must be greater than 0"),
    "test reruns out of range": (lambda t: ["run", "-p", "app", "-c", project(t, test_retries=9)],
                                 "projects[0] (app).test_retries: input should be less than or equal to 5"),
    "unknown field": (lambda t: ["run", "-p", "app", "-c", project(t, max_worker=2)],
                      "projects[0] (app).max_worker: unknown field"),
    "duplicate names": (lambda t: ["status", "-c", portfolio(t, {"projects": [
        {"name": "a", "path": str(_one_commit(bare_repo(t)))}] * 2})], "projects: duplicate project name 'a'"),
    "missing path": (lambda t: ["status", "-c", portfolio(t, {"projects": [{"name": "a", "path": "gone"}]})],
                     "projects[0] (a).path: " + "{tmp}/gone does not exist"),
    "not a git repository": (lambda t: ["status", "-c", portfolio(t, {"projects": [{"name": "a", "path": "."}]})],
                             "projects[0] (a).path: " + "{tmp} is not a git repository"),
    "repository without commits": (lambda t: ["run", "-p", "a", "-c", portfolio(t, {"projects": [
        {"name": "a", "path": str(bare_repo(t))}]})], "{tmp}/repo: repository has no commits: make a first commit"),
    "no main or master branch": (lambda t: ["run", "-p", "a", "-c", portfolio(t, {"projects": [
        {"name": "a", "path": str(_one_commit(bare_repo(t, "-b", "trunk")))}]})],
        "{tmp}/repo: repository has no main or master branch: set main_branch in the config"),
    "main_branch that does not exist": (lambda t: ["run", "-p", "app", "-c", project(t, main_branch="develop")],
                                        "main_branch 'develop' does not exist; create it or fix the config"),
    "backlog_file source without a file": (lambda t: ["run", "-p", "app", "-c", project(t, backlog_source="backlog_file")],
                                           "projects[0] (app).backlog_file: required when backlog_source is 'backlog_file'"),
    "bad branch prefix": (lambda t: ["run", "-p", "app", "-c", project(t, git_branch_prefix="my orch")],
                          "git_branch_prefix: branch prefix 'my orch' is not"),
    "github_repo not owner/name": (lambda t: ["run", "-p", "app", "-c", project(t, github_repo="widgets")],
                                   "projects[0] (app).github_repo: 'widgets' is not a GitHub repository: write it as 'owner/name'"),
    "webhook_url not a URL": (lambda t: ["status", "-c", portfolio(t, {"webhook_url": "hooks.example/x", "projects": []})],
                              "webhook_url: 'hooks.example/x' is not an http(s) URL"),
    "unknown approval stage": (lambda t: ["run", "-p", "app", "-c", project(t, require_approval="always")],
                               "projects[0] (app).require_approval: input should be 'none', 'plan' or 'merge'"),
    "GitHub issues without a token": (lambda t: ["run", "-p", "app", "-c", project(
        t, backlog_source="github_issues", github_repo="acme/widgets", github_token_env="ORCH_NO_SUCH_TOKEN")],
        "project 'app': backlog_source 'github_issues' needs a GitHub token in $ORCH_NO_SUCH_TOKEN"),
    "pull requests without a repository to name": (lambda t: ["run", "-p", "app", "-c", project(
        t, merge_strategy="pr", github_token_env="HOME")],
        "github_repo is not set and the origin remote (none) does not name a GitHub repository"),
    # -- the command line
    "unknown project": (lambda t: ["run", "-p", "nope", "-c", with_store(t)], "unknown project 'nope'"),
    "unknown task id": (lambda t: ["retry", "-p", "app", "0123456789ab", "-c", with_store(t)],
                        "unknown task id '0123456789ab' in project 'app': see `orch tasks`"),
    "retrying a task that has not failed": (
        lambda t: ["retry", "-p", "app", "t1", "-c", with_store(t, Task(id="t1", title="x", description="x"))],
        "task 't1' is pending, not failed: only a failed task can be retried"),
    "unknown task status": (lambda t: ["tasks", "-p", "app", "-s", "stuck", "-c", with_store(t)],
                            "Invalid value for '--status' / '-s'"),
    "unknown cycle id": (lambda t: ["show", "feedbeef", "-c", with_store(t)],
                         "unknown cycle id 'feedbeef': see `orch cycles`"),
    "approving a cycle that does not wait": (lambda t: ["approve", "feedbeef", "-c", with_store(t)],
                                             "unknown cycle id 'feedbeef': see `orch cycles`"),
    "rejecting without a reason": (lambda t: ["reject", "feedbeef", "--reason", " ", "-c", with_store(t)],
                                   "--reason must not be empty"),
    "empty task title": (lambda t: ["add-task", "-p", "app", "--title", " ", "-c", with_store(t)],
                         "--title must not be empty"),
    "priority out of range": (lambda t: ["add-task", "-p", "app", "--title", "x", "--priority", "9", "-c",
                                         with_store(t)], "Invalid value for '--priority'"),
    "a task after an unknown one": (lambda t: ["add-task", "-p", "app", "--title", "x", "--after", "nope", "-c",
                                               with_store(t)],
                                    "task 'x' depends on unknown task 'nope' in project 'app': see `orch tasks`"),
    "missing required option": (lambda t: ["tasks", "-c", with_store(t)], "Missing option '--project' / '-p'"),
    "unknown option": (lambda t: ["status", "--colour", "-c", with_store(t)], "No such option: --colour"),
    "unknown command": (lambda t: ["frobnicate"], "No such command 'frobnicate'"),
    "negative retention": (lambda t: ["gc", "-c", project(t, retention_days=-1)],
                           "projects[0] (app).retention_days: must be at least 0"),
    "a server database of no kind Prefect runs on": (
        lambda t: ["server", "--dir", str(t / "srv"), "--database-url", "mysql://orch:secret@db/prefect"],
        "--database-url: a Prefect server's database URL starts with postgresql+asyncpg:// or "
        "sqlite+aiosqlite://, not mysql://"),
    "orch start's server on a database of no kind Prefect runs on": (
        lambda t: ["start", "-c", with_store(t), "--database-url", "sqlite://"],
        "--database-url: a Prefect server's database URL starts with postgresql+asyncpg:// or "
        "sqlite+aiosqlite://, not sqlite://"),
    "gc of an unknown project": (lambda t: ["gc", "-p", "nope", "--dry-run", "-c", with_store(t)], "unknown project 'nope'"),
}


def _one_commit(path: Path) -> Path:
    git(path, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "--allow-empty", "-m", "first")
    return path


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, expected = CASES[kind]
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path)
    before = snapshot(tmp_path)

    code, out = orch(capsys, monkeypatch, *args)

    assert code != 0, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    assert expected.format(tmp=tmp_path.resolve()) in lines[0]
    assert snapshot(tmp_path) == before  # no data dir, database, audit file or git change appeared


def test_a_prefect_server_that_is_down_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    config = project(tmp_path)
    before = snapshot(tmp_path)
    code, out = orch(capsys, monkeypatch, "run", "-p", "app", "-c", config)
    assert code == 1 and out.strip().splitlines() == [
        "Error: no Prefect server answers at http://127.0.0.1:9/api: start it, or unset PREFECT_API_URL "
        "and orch run starts a temporary one; `orch doctor` checks the set-up"], out
    assert snapshot(tmp_path) == before


def test_a_failed_task_can_be_retried_and_keeps_its_reason(tmp_path: Path, capsys, monkeypatch) -> None:
    failed = Task(id="t1", title="Fix parser", description="d", status=TaskStatus.failed, attempts=3,
                  last_failure="judge rejected the change: tests fail")
    config = with_store(tmp_path, failed)
    code, out = orch(capsys, monkeypatch, "retry", "-p", "app", "t1", "-c", config)
    assert code == 0 and "Task t1 is pending again" in out, out
    task = Store.for_project(tmp_path / "data", "app").get_task("t1")
    assert (task.status, task.attempts, task.last_failure) == (
        TaskStatus.pending, 0, "judge rejected the change: tests fail"
    )


# -- bad model output in a real cycle ---------------------------------------------------


def _plan(*titles: str) -> list:
    tasks = [{"title": t, "description": f"{t} in calc.py.", "type": "code", "priority": 2} for t in titles]
    return [[structured({"findings": "f", "proposal": "p", "tasks": tasks})]]


def _done(summary: str) -> list:
    return [structured({"summary": summary, "completed": True})]


def _cycle_project(tmp_path: Path, **fields: Any) -> tuple[Path, Path, Store]:
    path = tmp_path / "calc"
    init_repo(path, {"calc.py": CALC, "test_calc.py": TESTS})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"data_dir": "data", "projects": [{
        "name": "calc", "path": "calc", "test_command": f"{sys.executable} -m unittest -q", **fields,
    }]}))
    return path, config, Store.for_project(tmp_path / "data", "calc")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_bad_planner_worker_and_judge_output_each_fail_only_their_task(tmp_path: Path, monkeypatch) -> None:
    path, config, store = _cycle_project(tmp_path, max_workers=4, worker_max_turns=3)
    store.add_task(Task(id="old", title="Rewrite in Rust", description="Rewrite in Rust in calc.py.",
                        status=TaskStatus.failed, attempts=3, last_failure="worker failed: too big"))
    store.add_task(Task(id="mine", title="Add subtract", description="Add subtract in calc.py.", priority=1))
    main_before = git(path, "rev-parse", "main").strip()
    scenario = Scenario(
        # Slots: 4 workers minus 1 pending task. A failed task and an open one come back as they were.
        planner=_plan("Rewrite in Rust", "Add subtract", "Tidy docs", "Loop forever", "Add multiply", "One too many"),
        workers={
            "Add subtract": [[write("calc.py", CALC + "\n\ndef subtract(a, b):\n    return a - b\n")],
                             _done("Added subtract.")],
            "Tidy docs": [_done("Nothing needed changing.")],  # claims success, changes nothing
            "Loop forever": [[bash("true")]] * 5,  # over worker_max_turns
            "Add multiply": [[write("calc.py", CALC + "\n\ndef multiply(a, b):\n    return a * b\n")],
                             [text("I think it is done.")]],  # never gives its structured report
        },
        judge=[[text("Looks good to me!")]],  # no verdict
    )
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    assert summary.status == "done" and summary.merged == []
    tasks = {t.title: t for t in store.list_tasks()}
    assert set(tasks) == {"Rewrite in Rust", "Add subtract", "Tidy docs", "Loop forever", "Add multiply"}
    plan_doc = (path / ".orch" / "plans" / f"cycle_{summary.cycle_id}.md").read_text()
    assert "Rewrite in Rust: repeats a failed task as is" in plan_doc
    assert "Add subtract: duplicates an open or finished task" in plan_doc
    assert "One too many: over the limit of 3 task(s)" in plan_doc
    reasons = {title: tasks[title].last_failure for title in ("Add subtract", "Tidy docs", "Loop forever", "Add multiply")}
    assert reasons["Add subtract"].startswith("judge rejected the change: review failed:"), reasons
    assert reasons["Tidy docs"] == "worker failed: worker made no changes"
    assert reasons["Loop forever"].endswith("error_max_turns: Reached maximum number of turns (3)"), reasons
    assert reasons["Add multiply"].endswith("the agent gave no structured output"), reasons
    for title in reasons:  # each goes back for another attempt, with its reason
        assert tasks[title].status is TaskStatus.pending and tasks[title].attempts == 1
    assert tasks["Rewrite in Rust"].status is TaskStatus.failed
    # Main did not move; nothing of the cycle is left in the repository.
    assert git(path, "rev-parse", "main").strip() == main_before
    assert git(path, "worktree", "list").count("\n") == 1 and git(path, "branch", "--list", "orch/*") == ""
    assert git(path, "status", "--porcelain") == ""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_a_planner_without_output_costs_its_run_and_the_cycle_still_works(tmp_path: Path, monkeypatch) -> None:
    path, config, store = _cycle_project(tmp_path, max_workers=2)
    store.add_task(Task(id="mine", title="Add subtract", description="Add subtract in calc.py."))
    scenario = Scenario(
        planner=[[text("Here are some ideas: make it faster, add docs.")]],  # prose, not a plan
        workers={"Add subtract": [[write("calc.py", CALC + "\n\ndef subtract(a, b):\n    return a - b\n")],
                                  _done("Added subtract.")]},
    )
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    assert summary.status == "done" and summary.message.startswith("planner failed: ")
    assert summary.merged == ["mine"]  # the pending task was worked on and merged all the same
    assert "subtract" in git(path, "show", "main:calc.py")
    plan_doc = (path / ".orch" / "plans" / f"cycle_{summary.cycle_id}.md").read_text()
    assert "The planner failed: " in plan_doc and "No task was added" in plan_doc
    assert [t.id for t in store.list_tasks()] == ["mine"]
    assert summary.cost_by_role["planner"] == pytest.approx(model.cost_usd("planner"), abs=1e-9)
    assert model.cost_usd("planner") > 0


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_an_error_inside_a_cycle_is_one_line_too(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    # The backlog file exists in the user's checkout but was never committed: the planner cannot see it.
    config = project(tmp_path, backlog_source="backlog_file", backlog_file="TODO.md")
    (tmp_path / "app" / "TODO.md").write_text("- add subtract\n")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "250"}
    run = subprocess.run([str(Path(sys.executable).with_name("orch")), "run", "-p", "app", "-c", config],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    # Prefect's traceback stays in the run's logs (the UI); the terminal gets one line.
    assert (run.stdout + run.stderr).strip().splitlines() == [
        "Error: project 'app': backlog_file 'TODO.md' is not committed on main; commit it or fix the config"
    ]
    assert Store.for_project(tmp_path / "data", "app").find_cycles("")[0].status == "failed"
