"""The planner is asked again only when what it reads changed, or after replan_after_hours."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycles import commit_file
from fake_github import FakeGitHub

from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.models import CycleStatus, CycleSummary, Task, TaskStatus
from orchestrator.stages import plan_inputs
from orchestrator.stages.context import ProjectContext, ProjectRef, Services

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


def context(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, **fields: object) -> ProjectContext:
    if not (tmp_path / "app").exists():
        init_repo(tmp_path / "app", {"CLAUDE.md": "# app\n\n- [ ] Add a shout command\n"})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", **fields}]}))
    return ProjectContext.open(ProjectRef(project="app", config_path=str(config)), Services(clock=clock))


def planned(ctx: ProjectContext) -> None:
    """What adopting a plan keeps: what its planner read (the whole cycle is in test_idle_cycles)."""
    ctx.store.set_planned(plan_inputs.digest_now(ctx), ctx.services.clock().isoformat())


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_project_never_planned_plans(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path, clock, monkeypatch)
    assert plan_inputs.idle(ctx) == ""


def test_nothing_changed_is_idle_until_replan_after_hours(tmp_path: Path, clock: Clock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path, clock, monkeypatch, replan_after_hours=6)
    planned(ctx)
    assert plan_inputs.idle(ctx) == "nothing new to plan since 2026-12-02 08:00 UTC"
    clock.now = NOW + timedelta(hours=5, minutes=59)
    assert plan_inputs.idle(ctx)
    clock.now = NOW + timedelta(hours=6)
    assert plan_inputs.idle(ctx) == ""


def test_a_commit_on_main_plans_again(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path, clock, monkeypatch)
    planned(ctx)
    commit_file(tmp_path / "app", "CLAUDE.md", "# app\n\n- [ ] Add a whisper command\n")
    assert plan_inputs.idle(ctx) == ""


def test_task_states_failures_and_outcomes_plan_again(tmp_path: Path, clock: Clock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path, clock, monkeypatch)
    store = ctx.store
    store.add_task(Task(id="t1", title="Add shout", max_attempts=1))
    store.start_cycle("c1", ctx.repo.head())
    store.claim_tasks("c1", 1)
    planned(ctx)  # t1 in progress
    assert plan_inputs.idle(ctx) == ""  # a cycle is running: it resumes
    store.finish_cycle(CycleSummary(project="app", cycle_id="c1", status=CycleStatus.done))
    assert plan_inputs.idle(ctx)  # nothing merged or rejected: nothing new
    store.fail_attempt("t1", "tests failed")  # out of the open tasks, into the failures
    assert plan_inputs.idle(ctx) == ""
    planned(ctx)
    assert plan_inputs.idle(ctx)
    store.start_cycle("c2", ctx.repo.head())
    store.finish_cycle(CycleSummary(project="app", cycle_id="c2", status=CycleStatus.done, rejected={"t1": "no"}))
    assert plan_inputs.idle(ctx) == ""  # the planner is shown what cycles merged and rejected
    planned(ctx)
    store.add_task(Task(id="t2", title="Add whisper"))
    assert plan_inputs.idle(ctx) == ""  # a pending task: a cycle works on it


def test_settings_the_planner_reads_plan_again(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    planned(context(tmp_path, clock, monkeypatch))
    assert plan_inputs.idle(context(tmp_path, clock, monkeypatch, planner_context_files=["CLAUDE.md", "README.md"])) == ""


def test_github_issues_opened_edited_or_closed_plan_again(tmp_path: Path, clock: Clock, gh: FakeGitHub,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_GH_TOKEN", str(gh.token))
    fields = {"backlog_source": "github_issues", "github_repo": gh.repo, "github_api_url": gh.api_url,
              "github_token_env": "ORCH_TEST_GH_TOKEN"}
    ctx = context(tmp_path, clock, monkeypatch, **fields)
    first = gh.add_issue("Add shout", "Loud.")
    planned(ctx)
    assert plan_inputs.idle(ctx)
    gh.issues[first]["body"] = "Louder."
    assert plan_inputs.idle(ctx) == ""
    planned(ctx)
    second = gh.add_issue("Add whisper")
    assert plan_inputs.idle(ctx) == ""
    planned(ctx)
    gh.issues[second]["state"] = "closed"
    assert plan_inputs.idle(ctx) == ""
    planned(ctx)
    gh.add_issue("Not for us", labels=("other",))
    assert plan_inputs.idle(ctx)


def test_a_manual_backlog_is_idle_without_pending_tasks(tmp_path: Path, clock: Clock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path, clock, monkeypatch, backlog_source="manual")
    assert "no pending task" in plan_inputs.idle(ctx)
    ctx.store.add_task(Task(id="t1", title="Add shout"))
    assert plan_inputs.idle(ctx) == ""
    assert ctx.store.get_task("t1").status is TaskStatus.pending
