"""API faults are not the agent's failure: a session the API kept failing gives its task back, attempt unspent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cycles import run_cycle, sample_config, use_model

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import Block, Fail, RequestView, ScriptedModel, approve_all
from orchestrator.domain.models import TaskStatus, TaskWait

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

# With no retries of ours, one try is the CLI's request and its own single retry.
REQUESTS_PER_TRY = 2


def failing_first(answer: Callable[[RequestView], list[Block]], failures: int,
                  only: Callable[[RequestView], bool] = lambda view: True) -> Callable[[RequestView], list[Block] | Fail]:
    """A turn whose first ``failures`` requests (of those ``only`` picks) get an HTTP 500, then ``answer``."""
    failed: list[int] = []

    def turn(view: RequestView) -> list[Block] | Fail:
        if only(view) and len(failed) < failures:
            failed.append(view.turn)
            return Fail(500, "stand-in fault")
        return answer(view)

    return turn


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
    scenario.judge = [failing_first(approve_all, REQUESTS_PER_TRY, only=lambda view: "stats.py" in view.prompt)]
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
