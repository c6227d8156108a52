"""API faults are not the agent's failure: a session the API kept failing gives its task back, attempt unspent."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycles import failing_first, run_cycle, sample_config, use_model
from orch_cli import orch
from webhook_receiver import WebhookReceiver

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import (
    Block,
    Fail,
    RequestView,
    Scenario,
    ScriptedModel,
    Turn,
    approve_all,
)
from orchestrator.domain.models import TaskStatus, TaskWait

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

# With no retries of ours, one try is the CLI's request and its own single retry.
REQUESTS_PER_TRY = 2


def test_a_session_the_api_kept_failing_spends_no_attempt_and_resumes_next_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_config(tmp_path, api_retries=0, api_retry_base_seconds=0.05)
    scenario = demo_scenario()
    shout = scenario.workers["Add shout helper"]
    second_turn = shout[1]
    assert isinstance(second_turn, list)
    # The shout worker's second turn fails (its first, paid turn wrote the files); the review of mean fails.
    shout[1] = failing_first(lambda view: second_turn, REQUESTS_PER_TRY)
    scenario.judge = [failing_first(approve_all, REQUESTS_PER_TRY, only=lambda view: "stats.py" in view.prompt), approve_all]
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        first = run_cycle(config)
        store = Store.for_project(config.parent / "data", "calc")
        tasks = {t.title: t for t in store.list_tasks()}
        for title in ("Add shout helper", "Add mean function"):
            task = tasks[title]
            assert task.status is TaskStatus.pending and task.attempts == 0, task  # attempt unspent
            assert task.waiting is TaskWait.api and task.last_failure.startswith("API failed: "), task
            assert "API error 500" in task.last_failure
            assert task.id not in first.merged
        assert store.state().consecutive_failures == 0
        # The worktree stays: the shout worker's paid first turn wrote these files.
        worktree = config.parent / "calc" / ".orch" / "worktrees" / tasks["Add shout helper"].id
        assert (worktree / "strings.py").is_file()

        second = run_cycle(config)
    tasks = {t.title: t for t in store.list_tasks()}
    for title in ("Add shout helper", "Add mean function"):
        assert tasks[title].status is TaskStatus.done and tasks[title].attempts == 1
        assert tasks[title].id in second.merged
    # The shout session resumed where the fault cut it: its first turn was not asked (or paid) again.
    answered = [r.turn for r in model.requests if r.key == "Add shout helper" and r.status == 200]
    assert answered == [0, 1, 2]
    # The mean worker's finished work was not redone; only its review was asked again.
    assert len([r for r in model.requests if r.key == "Add mean function" and r.status == 200]) == 3


def test_a_rate_limit_parks_the_project_until_it_resets_and_nobody_pays_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = demo_scenario()
    shout = scenario.workers["Add shout helper"]
    second_turn = shout[1]
    assert isinstance(second_turn, list)
    # Its first, paid turn wrote the files; its second is refused for a limit that resets in a minute.
    shout[1] = failing_first(lambda view: second_turn, 1, Fail(429, "rate limit reached", "rate_limit_error",
                                                               (("retry-after", "60"),)))
    with WebhookReceiver() as hook, ScriptedModel(scenario) as model:
        config = sample_config(tmp_path, webhook_url=hook.url)
        use_model(model, monkeypatch)
        first = run_cycle(config)
        store = Store.for_project(config.parent / "data", "calc")
        state = store.state()
        assert state.rate_limited_until is not None
        ends = datetime.fromisoformat(state.rate_limited_until)
        assert timedelta(seconds=30) < ends - datetime.now(UTC) < timedelta(seconds=120)
        # The session was cut as soon as the CLI said it would wait: one refused request, not a minute's retries.
        assert [r.status for r in model.requests if r.key == "Add shout helper"] == [200, 429]
        shout_task = next(t for t in store.list_tasks() if t.title == "Add shout helper")
        assert (shout_task.status, shout_task.attempts, shout_task.waiting) == (TaskStatus.pending, 0, TaskWait.api)
        assert "rate-limited until" in shout_task.last_failure
        assert first.status == "done" and store.state().consecutive_failures == 0
        asked = len(model.requests)

        # Runs meanwhile end at once and ask nothing; the limit is announced once.
        during = run_cycle(config)
        assert during.status == "rate_limited" and "rate-limited until" in during.message
        assert len(model.requests) == asked
        code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
        assert code == 0 and "rate-limited until" in out, out
        assert [b["event"] for b in hook.received].count("rate_limited") == 1

        store.set_rate_limit("2000-01-01T00:00:00+00:00", "long past")  # as if the reset had come
        after = run_cycle(config)
    assert after.status == "done" and shout_task.id in after.merged
    assert store.get_task(shout_task.id).attempts == 1
    # Resumed, not restarted: the shout session's first, paid turn was answered once.
    assert [r.turn for r in model.requests if r.key == "Add shout helper" and r.status == 200].count(0) == 1


def every_nth_request_fails(scenario: Scenario, n: int) -> Scenario:
    """``scenario`` with every ``n``-th request, of any role, answered by an API fault in turn:
    an overload (529), a rate limit that resets in a second (429), a server error (500)."""
    faults = [Fail(529, "Overloaded"), Fail(429, "rate limited", "rate_limit_error", (("retry-after", "1"),)),
              Fail(500, "stand-in fault")]
    asked = itertools.count(1)

    def wrap(turn: Turn) -> Turn:
        def faulty(view: RequestView) -> list[Block] | Fail:
            number = next(asked)
            if number % n == 0:
                return faults[(number // n) % len(faults)]
            return turn(view) if callable(turn) else turn

        return faulty

    scenario.planner = [wrap(t) for t in scenario.planner]
    scenario.judge = [wrap(t) for t in scenario.judge]
    scenario.workers = {key: [wrap(t) for t in script] for key, script in scenario.workers.items()}
    return scenario


def test_with_every_4th_request_failing_every_task_ends_with_one_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_config(tmp_path, api_retry_base_seconds=0.05)  # the default api_retries (3)
    with ScriptedModel(every_nth_request_fails(demo_scenario(), 4)) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)
    assert len([r for r in model.requests if r.status != 200]) >= 3  # the faults did happen
    store = Store.for_project(config.parent / "data", "calc")
    tasks = store.list_tasks()
    assert len(summary.merged) == 2  # as without faults: the demo's third change fails its tests
    for task in tasks:
        assert task.attempts == 1 and "API" not in task.last_failure, task
