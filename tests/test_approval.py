"""The approval gate for cycles run without a deployment (``orch run``): wait, approve, reject, time out.

The deployment side (a suspended flow run, resumed from the UI's input or by
``orch approve``, across restarts) is in test_approval_serving.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cycles import git, run_cycle, sample_config, use_model
from orch_cli import orch
from webhook_receiver import WebhookReceiver

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import ScriptedModel
from orchestrator.domain.models import ApprovalStage, TaskStatus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]


def roles(model: ScriptedModel) -> list[str]:
    return [r.role for r in model.requests]


def test_a_plan_waits_for_approval_and_orch_approve_lets_the_same_cycle_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with WebhookReceiver() as hook, ScriptedModel(demo_scenario()) as model:
        config = sample_config(tmp_path, require_approval="plan", webhook_url=hook.url, max_workers=2)
        store = Store.for_project(tmp_path / "data", "calc")
        use_model(model, monkeypatch)
        main_before = git(tmp_path / "calc", "rev-parse", "main")

        first = run_cycle(config)
        assert first.status == "waiting" and "orch approve" in first.message
        assert set(roles(model)) == {"planner"}  # no worker starts before the plan is approved
        assert {t.status for t in store.list_tasks()} == {TaskStatus.pending}
        notice = hook.wait_for(lambda body: body["event"] == "approval_needed")
        assert notice["details"]["cycle"] == first.cycle_id
        assert (tmp_path / "calc" / ".orch" / "plans" / f"cycle_{first.cycle_id}.md").exists()

        # Another run meanwhile does nothing: the waiting cycle holds the project.
        asked = len(model.requests)
        again = run_cycle(config)
        assert (again.status, again.cycle_id) == ("waiting", first.cycle_id)
        assert len(model.requests) == asked
        code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
        assert code == 0 and f"approval: cycle {first.cycle_id} waits for approval of its plan" in out

        code, out = orch(capsys, monkeypatch, "approve", first.cycle_id[:7], "-c", str(config), "--reason", "fine")
        assert code == 0 and f"Approved the plan of cycle {first.cycle_id}" in out
        code, out = orch(capsys, monkeypatch, "approve", first.cycle_id, "-c", str(config))
        assert code == 1 and "is not waiting for approval" in out

        done = run_cycle(config)
    assert (done.cycle_id, done.status) == (first.cycle_id, "done")
    assert len(done.merged) == 2 and git(tmp_path / "calc", "rev-parse", "main") != main_before
    assert len({r.session_id for r in model.requests if r.role == "planner"}) == 1  # the approved plan ran
    decision = store.approval(first.cycle_id, ApprovalStage.plan)
    assert decision is not None and (decision.status, decision.decided_by, decision.reason) == (
        "approved", "orch approve", "fine")
    finished = [b for b in hook.received if b["event"] == "cycle_finished"]
    assert len(finished) == 1 and finished[0]["details"]["merged"] == "2"


def test_a_rejected_plan_fails_its_tasks_with_the_reason_and_the_planner_hears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store.for_project(tmp_path / "data", "calc")
    # The webhook is down all along: its notices are tried, given up, and fail nothing.
    monkeypatch.setenv("ORCH_WEBHOOK_ATTEMPTS", "2")
    monkeypatch.setenv("ORCH_WEBHOOK_BACKOFF_S", "0.01")
    with WebhookReceiver() as hook, ScriptedModel(demo_scenario()) as model:
        hook.fail_next(500, count=1000)
        config = sample_config(tmp_path, require_approval="plan", webhook_url=hook.url)
        use_model(model, monkeypatch)
        first = run_cycle(config)
        assert first.status == "waiting"
        code, out = orch(capsys, monkeypatch, "reject", first.cycle_id, "-c", str(config))
        assert code == 2 and "--reason" in out  # a rejection says why
        code, out = orch(capsys, monkeypatch, "reject", first.cycle_id, "-c", str(config),
                         "--reason", "One helper per cycle, please")
        assert code == 0, out

        rejected = run_cycle(config)
        assert (rejected.cycle_id, rejected.status) == (first.cycle_id, "rejected")
        assert "worker" not in roles(model)
        for task in store.list_tasks():
            assert task.status is TaskStatus.failed
            assert task.last_failure == "plan rejected (orch reject): One helper per cycle, please"

        # The next plan is told why, and the same tasks are not planned again as they were.
        with caplog.at_level(logging.WARNING):
            later = run_cycle(config)
        events = [b["event"] for b in hook.received]
    assert events == ["approval_needed"] * 2 + ["cycle_finished"] * 4  # each tried twice
    assert "was not delivered" in caplog.text and "secret" not in caplog.text  # its path holds a secret
    prompts = [r.prompt for r in model.requests if r.role == "planner" and r.turn == 0]
    assert len(prompts) == 2 and "One helper per cycle, please" in prompts[1]
    assert later.status == "done" and later.planned == []


def test_a_merge_waiting_past_its_deadline_gets_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_config(tmp_path, require_approval="merge", approval_timeout_minutes=0.02, max_workers=2,
                           approval_default="approve")
    store = Store.for_project(tmp_path / "data", "calc")
    main_before = git(tmp_path / "calc", "rev-parse", "main")
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)
        first = run_cycle(config)
        assert first.status == "waiting" and first.merged == []
        assert git(tmp_path / "calc", "rev-parse", "main") == main_before
        # The passing branches wait in their worktrees, still held by the cycle.
        held = store.list_tasks(TaskStatus.in_progress)
        assert len(held) == 2 and all((tmp_path / "calc" / ".orch" / "worktrees" / t.id).is_dir() for t in held)
        paid = len(model.requests)

        time.sleep(1.5)  # past the 1.2 s deadline
        done = run_cycle(config)
    assert (done.cycle_id, done.status, len(done.merged)) == (first.cycle_id, "done", 2)
    assert len(model.requests) == paid  # nothing was asked again
    decision = store.approval(first.cycle_id, ApprovalStage.merge)
    assert decision is not None and (decision.status, decision.decided_by) == ("approved", "timeout")


def test_a_merge_rejected_by_its_default_sends_the_branches_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sample_config(tmp_path, require_approval="merge", approval_timeout_minutes=0.01, max_workers=2)
    store = Store.for_project(tmp_path / "data", "calc")
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)
        assert run_cycle(config).status == "waiting"
        time.sleep(1)
        ended = run_cycle(config)
    assert ended.status == "rejected" and ended.merged == []
    sent_back = [t for t in store.list_tasks() if t.last_failure.startswith("merge rejected (timeout)")]
    assert len(sent_back) == 2 and all(t.status is TaskStatus.pending for t in sent_back)
    assert not list((tmp_path / "calc" / ".orch" / "worktrees").iterdir())
