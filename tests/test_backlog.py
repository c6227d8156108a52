"""Backlog sources end to end: a backlog file, GitHub issues (a loopback fake), manual tasks.

Each runs whole cycles with the real SDK and CLI against the scripted model.
The scripted planner reads the item ids it is shown, as a model would, and
links its tasks to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cycles import (
    ITEM_LINE,
    commit_file,
    git,
    github_config,
    linking_planner,
    linking_scenario,
    run_cycle,
    sample_config,
    use_model,
)
from fake_github import FakeGitHub
from orch_cli import orch

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import RequestView, ScriptedModel
from orchestrator.domain.models import TaskStatus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

BACKLOG_MD = """# Backlog

- [x] Set up the repository
- [ ] A shout helper in strings.py
  It upper-cases and adds "!".
- [ ] A mean function in stats.py
- [ ] Make add faster
"""


def test_a_backlog_file_is_ticked_by_the_merges_and_the_planner_learns_from_the_rejection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_config(tmp_path, backlog_source="backlog_file", backlog_file="BACKLOG.md")
    project = tmp_path / "calc"
    commit_file(project, "BACKLOG.md", BACKLOG_MD)
    store = Store.for_project(tmp_path / "data", "calc")
    prompts: list[str] = []
    scenario = linking_scenario(prompts)
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        first = run_cycle(config)
        assert "Set up the repository" not in prompts[0] and 'It upper-cases and adds "!".' in prompts[0]
        tasks = {t.title: t for t in store.list_tasks()}
        assert all(t.backlog_item for t in tasks.values())
        assert len(first.merged) == 2

        # Main's backlog has the merged items ticked, by the merge commits themselves.
        backlog = git(project, "show", "main:BACKLOG.md")
        assert "- [x] A shout helper in strings.py" in backlog and "- [x] A mean function in stats.py" in backlog
        assert "- [ ] Make add faster" in backlog and backlog.count("[x]") == 3
        touched = git(project, "log", "--format=%s", "main", "--", "BACKLOG.md").splitlines()
        assert sorted(touched[:2]) == sorted(f"Merge orch/{tasks[t].id}: {t}" for t in ("Add mean function", "Add shout helper"))
        assert store.get_task(tasks["Add shout helper"].id).backlog_done

        # The next plan sees only the open item, already a task, and what the last cycle rejected and why.
        scenario.planner = [linking_planner(prompts, lessons="add() must keep its results: fix first, then speed.")]
        second = run_cycle(config)
    assert ITEM_LINE.findall(prompts[1]) == [(tasks["Make add faster"].backlog_item, "Make add faster")]
    assert "(already a task: pending)" in prompts[1]
    history = prompts[1].split("## Recent cycles", 1)[1]
    assert f"Cycle {first.cycle_id}" in history and "merged: Add shout helper" in history
    assert "not merged: Make add faster: judge rejected the change: tests pass on the base but fail" in history
    plan = (project / ".orch" / "plans" / f"cycle_{second.cycle_id}.md").read_text()
    assert "## Learned from recent cycles\n\nadd() must keep its results: fix first, then speed." in plan


def test_a_json_backlog_item_is_marked_done_when_its_task_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sample_config(tmp_path, backlog_source="backlog_file", backlog_file="backlog.json", max_workers=1)
    project = tmp_path / "calc"
    items = [{"id": "shout", "title": "A shout helper", "description": "In strings.py."}, "A mean function"]
    commit_file(project, "backlog.json", json.dumps(items, indent=2) + "\n")
    scenario = linking_scenario()
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)
    assert len(summary.merged) == 1
    assert json.loads(git(project, "show", "main:backlog.json")) == [
        {"id": "shout", "title": "A shout helper", "description": "In strings.py.", "done": True}, "A mean function"]


def test_github_issues_are_the_backlog_and_are_closed_with_a_link_to_their_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGitHub(token="ghp_scripted_token_1234") as gh:
        shout = gh.add_issue("Add a shout helper", "strings.shout(text): upper-case, then '!'.")
        mean = gh.add_issue("Add a mean function")
        other = gh.add_issue("Make add faster, someday", labels=("question",))
        config = github_config(tmp_path, gh, monkeypatch, max_workers=2)
        store = Store.for_project(tmp_path / "data", "calc")
        prompts: list[str] = []
        scenario = linking_scenario(prompts)
        with ScriptedModel(scenario) as model:
            use_model(model, monkeypatch)
            summary = run_cycle(config)
    assert [item for item, _ in ITEM_LINE.findall(prompts[0])] == [f"#{shout}", f"#{mean}"]
    assert "upper-case, then '!'" in prompts[0] and "someday" not in prompts[0]
    assert len(summary.merged) == 2
    for number in (shout, mean):
        [task] = store.linked_tasks(f"#{number}")
        issue = gh.issues[number]
        assert issue["state"] == "closed" and task.backlog_done
        assert issue["comments"] == [
            f"Done by the orchestrator in commit {gh.url}/acme/widgets/commit/{task.merge_commit} "
            f"(task `{task.id}`: {task.title})."]
    assert gh.issues[other]["state"] == "open" and gh.issues[other]["comments"] == []


def test_an_issue_github_could_not_take_is_labelled_by_the_next_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGitHub() as gh:
        number = gh.add_issue("Add a shout helper")
        config = github_config(tmp_path, gh, monkeypatch, github_on_merge="label", max_workers=1)
        store = Store.for_project(tmp_path / "data", "calc")
        scenario = linking_scenario()
        judge = scenario.judge[0]

        def judge_while_github_is_down(view: RequestView) -> Any:
            gh.fail_next(503, count=1000)  # from the review on: through the merge's comment and label
            return judge(view)  # type: ignore[operator]

        scenario.judge = [judge_while_github_is_down, judge]  # a second turn when it waits for the tests
        with ScriptedModel(scenario) as model:
            use_model(model, monkeypatch)
            first = run_cycle(config)
            [task] = store.linked_tasks(f"#{number}")
            assert first.status == "done" and first.merged == [task.id]
            assert not store.get_task(task.id).backlog_done and gh.issues[number]["comments"] == []
            gh.heal()
            run_cycle(config)
    issue = gh.issues[number]
    assert issue["state"] == "open" and "orch-done" in issue["labels"] and len(issue["comments"]) == 1
    assert store.get_task(task.id).backlog_done


def test_manual_backlog_works_only_on_added_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sample_config(tmp_path, backlog_source="manual")
    code, out = orch(capsys, monkeypatch, "add-task", "-p", "calc", "-c", str(config), "--title", "Add shout helper",
                     "--desc", "Create strings.py with shout(text) and a test.")
    assert code == 0, out
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)
    assert "planner" not in {r.role for r in model.requests}
    [task] = Store.for_project(tmp_path / "data", "calc").list_tasks()
    assert (task.source, task.status, summary.merged) == ("manual", TaskStatus.done, [task.id])
