"""Spend caps per cycle and per day: counted from recorded cost, held while sessions run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cycles import run_cycle, sample_config, use_model
from orch_cli import orch
from webhook_receiver import WebhookReceiver

from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import ScriptedModel
from orchestrator.domain.errors import BudgetReached
from orchestrator.domain.models import BUDGET_WAITED, TaskStatus, TaskWait
from orchestrator.stages.budget import CycleBudget, SpendLedger, day_start
from orchestrator.stages.context import ProjectContext, ProjectRef, Services

CAPS = {"max_budget_per_plan": 0.05, "max_budget_per_task": 0.05, "max_budget_per_review": 0.05}


def budget(tmp_path: Path, cycle_id: str = "c1", **caps: float) -> CycleBudget:
    config = load_portfolio(sample_config(tmp_path, **caps))
    return CycleBudget(config.projects[0], Store.for_project(config.data_dir, "calc"), cycle_id)


def test_sessions_in_flight_hold_their_caps_until_their_cost_is_recorded(tmp_path: Path) -> None:
    caps = budget(tmp_path, max_budget_per_cycle=1.0)
    with caps.session("a", 0.4) as settle_a, caps.session("b", 0.4):
        with pytest.raises(BudgetReached) as refused, caps.session("c", 0.4):
            pass
        assert refused.value.cap == "max_budget_per_cycle" and "$1.00" in str(refused.value)
        assert caps.store.state().budget_stop == str(refused.value)
        settle_a(0.1)
    # a spent 0.1 and b 0.4, recorded or not: 0.5 + 0.4 fits, 0.5 + 0.6 does not.
    caps.store.record_cost("a", "c1", None, "worker", "sonnet", 0.1)
    assert caps.stop(0.4) is None and caps.stop(0.6) is not None
    assert CycleBudget(caps.config, caps.store, "c2").stop(0.9) is None  # another cycle starts from zero


def test_the_day_cap_counts_today_only_and_says_when_it_resets(tmp_path: Path) -> None:
    caps = budget(tmp_path, max_budget_per_day=1.0)
    caps.store.record_cost("old", "c0", None, "worker", "sonnet", 5.0)
    caps.store.db.execute("UPDATE agent_costs SET created_at = ?",
                          [(day_start() - timedelta(hours=1)).isoformat(timespec="seconds")])
    caps.store.db.conn.commit()
    caps.store.record_cost("today", "c1", None, "worker", "sonnet", 0.8)
    assert caps.stop(0.2) is None
    reached = caps.stop(0.25)
    assert reached is not None and reached.cap == "max_budget_per_day"
    assert reached.resets_at == (day_start() + timedelta(days=1)).isoformat(timespec="seconds")


def test_a_context_passes_its_clock_and_ledger_to_the_caps(tmp_path: Path) -> None:
    """Services come in through the project context: a clock just past midnight and a ledger of its own."""
    config = sample_config(tmp_path, max_budget_per_day=1.0)
    ref = ProjectRef(project="calc", config_path=str(config))
    clock = lambda: datetime(2031, 5, 4, 0, 0, 1, tzinfo=UTC)  # noqa: E731
    ctx = ProjectContext.open(ref, Services(ledger=SpendLedger(), clock=clock))
    ctx.store.record_cost("late", "c0", None, "worker", "sonnet", 0.9)  # now, i.e. 2026: another day
    with ctx.budget("c1").session("a", 0.7):
        assert ctx.budget("c1").stop(0.3) is None  # 0.7 held + 0.3 fits the day of 2031-05-04
        reached = ctx.budget("c1").stop(0.4)
        assert reached is not None and reached.resets_at == "2031-05-05T00:00:00+00:00"
        other = ProjectContext.open(ref, Services(ledger=SpendLedger(), clock=clock))
        assert other.budget("c1").stop(1.0) is None  # its own ledger holds nothing


def test_no_cap_means_no_stop(tmp_path: Path) -> None:
    caps = budget(tmp_path)
    with caps.session("a", 1000.0), caps.session("b", 1000.0):
        assert caps.stop(1e9) is None




@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_a_worker_over_the_cycle_cap_does_not_start_and_keeps_its_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with WebhookReceiver() as hook, ScriptedModel(demo_scenario()) as model:
        # The planner (at most $0.05) fits in $0.06; a worker's $0.05 more does not.
        config = sample_config(tmp_path, max_budget_per_cycle=0.06, webhook_url=hook.url, **CAPS)
        use_model(model, monkeypatch)
        summary = run_cycle(config)
        notice = hook.wait_for(lambda body: body["event"] == "budget_reached")
    store = Store.for_project(tmp_path / "data", "calc")
    assert summary.status == "done" and {r.role for r in model.requests} == {"planner"}
    assert store.cycle_cost(summary.cycle_id) <= 0.06
    for task in store.list_tasks():  # back as they were: no attempt spent, no worktree
        assert (task.status, task.attempts) == (TaskStatus.pending, 0)
    assert not list((tmp_path / "calc" / ".orch" / "worktrees").iterdir())
    assert "per-cycle cap $0.06 reached" in notice["text"]
    code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
    assert code == 0 and "budget: per-cycle cap $0.06 reached" in out and "resets with the next cycle" in out


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_a_review_over_the_cycle_cap_waits_and_the_next_cycle_does_not_pay_the_worker_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One task: planner and worker fit in $0.07; their cost and a review's $0.05 do not.
    config = sample_config(tmp_path, max_workers=1, max_budget_per_cycle=0.07, **CAPS)
    store = Store.for_project(tmp_path / "data", "calc")
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)
        first = run_cycle(config)
        [task] = store.list_tasks()
        assert task.status is TaskStatus.pending and task.last_failure.startswith(BUDGET_WAITED)
        assert task.waiting is TaskWait.budget
        assert task.attempts == 0 and (tmp_path / "calc" / ".orch" / "worktrees" / task.id).is_dir()
        assert "judge" not in {r.role for r in model.requests}
        assert store.cycle_cost(first.cycle_id) <= 0.07
        paid = len(model.requests)

        second = run_cycle(config)
    assert second.merged == [task.id] and store.get_task(task.id).status is TaskStatus.done
    assert {r.role for r in model.requests[paid:]} == {"judge"}  # the finished work was not asked for again


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_a_spent_day_stops_the_cycle_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with WebhookReceiver() as hook, ScriptedModel(demo_scenario()) as model:
        config = sample_config(tmp_path, max_budget_per_day=1.0, webhook_url=hook.url, **CAPS)
        store = Store.for_project(tmp_path / "data", "calc")
        store.record_cost("earlier", "c0", None, "worker", "sonnet", 0.97)
        use_model(model, monkeypatch)
        summary = run_cycle(config)
        assert run_cycle(config).status == "budget"
        events = [b["event"] for b in hook.received]
    assert summary.status == "budget" and model.requests == [] and store.list_tasks() == []
    assert events.count("budget_reached") == 1  # announced once a day, not by every cycle it stops
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d 00:00")
    assert "per-day cap $1.00 reached" in summary.message and f"resets at {tomorrow} UTC" in summary.message
    code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
    assert code == 0 and f"resets at {tomorrow} UTC" in out
