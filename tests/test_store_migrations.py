"""Stores of every earlier schema, opened by today's ``Store``: their rows read back as models.

Each test builds a database with the real migrations up to one step (what
that release left on disk), writes rows the way that release wrote them,
and opens it; ``Store`` applies the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlite_utils

from orchestrator.adapters.store import Store
from orchestrator.adapters.store_migrations import migrations
from orchestrator.domain.models import (
    ApprovalStage,
    ApprovalStatus,
    CycleStatus,
    CycleSummary,
    TaskStatus,
    TaskWait,
)

SUMMARY = {"project": "app", "cycle_id": "c-done", "status": "done", "message": "", "planned": ["t1"],
           "worked": ["t1"], "passed": ["t1"], "rejected": {}, "merged": ["t1"], "cost_by_role": {"worker": 0.5}}


def _old_store(path: Path, stop_before: str | None) -> sqlite_utils.Database:
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before=stop_before)
    return db


def _old_cycles(db: sqlite_utils.Database) -> None:
    """A finished cycle and one a crash left running (planned, not claimed yet), as start_cycle wrote them."""
    common = {"plan_path": "", "cost_usd": 0.0, "session_id": "", "message": "", "flow_run_id": ""}
    db["planner_cycles"].insert_all([
        {"id": "c-done", "status": "done", "base_commit": "a" * 40, "started_at": "2026-01-01T10:00:00+00:00",
         "finished_at": "2026-01-01T10:05:00+00:00", **common, "planned": '["t1"]', "claimed": '["t1"]',
         "summary": json.dumps(SUMMARY), "cost_usd": 0.5},
        {"id": "c-live", "status": "running", "base_commit": "b" * 40, "started_at": "2026-01-02T10:00:00+00:00",
         "finished_at": None, **common, "planned": "[]", "claimed": "", "summary": "{}", "flow_run_id": "run-1"},
    ])
    db["project_state"].insert({"name": "app", "paused": 1, "paused_reason": "holiday", "consecutive_failures": 2,
                                "last_cycle_id": "c-done", "last_cycle_at": "2026-01-01T10:05:00+00:00",
                                "updated_at": "2026-01-01T10:05:00+00:00"})


def _check_cycles(store: Store) -> None:
    tables = set(store.db.table_names())
    assert "cycles" in tables and "planner_cycles" not in tables
    # Its own index kept (renamed as a new table's would be), next to the primary key's.
    indexes = {i.name: i.columns for i in store.db["cycles"].indexes if not i.name.startswith("sqlite_autoindex")}
    assert indexes == {"idx_cycles_status": ["status"]}
    done, live = store.get_cycle("c-done"), store.get_cycle("c-live")
    assert (done.status, done.planned, done.claimed, done.cost_usd) == (CycleStatus.done, ["t1"], ["t1"], 0.5)
    assert done.summary == CycleSummary.model_validate(SUMMARY)
    assert (live.status, live.planned, live.claimed, live.summary) == (CycleStatus.running, [], None, None)
    assert (live.finished_at, live.flow_run_id, live.slot_waits) == (None, "run-1", 0)
    assert [c.id for c in store.list_cycles()] == ["c-live", "c-done"]
    assert store.unfinished_cycle() == live and store.running_cycles() == [live]
    state = store.state()
    assert (state.paused, state.paused_reason, state.consecutive_failures) == (True, "holiday", 2)
    assert (state.last_cycle_id, state.budget_stop, state.budget_resets_at) == ("c-done", "", None)
    # And it is written to as any store: the running cycle claims, waits for a slot and finishes.
    store.update_cycle("c-live", claimed=[])
    store.slot_wait_began("c-live")
    store.slot_wait_ended("c-live", 1.5)
    store.finish_cycle(CycleSummary(project="app", cycle_id="c-live", status=CycleStatus.failed, message="gone"))
    live = store.get_cycle("c-live")
    assert (live.status, live.claimed, live.message, live.slot_waits, live.slot_wait_s) == (
        CycleStatus.failed, [], "gone", 1, 1.5)
    assert live.summary is not None and live.summary.status is CycleStatus.failed
    assert store.unfinished_cycle() is None and store.state().last_cycle_id == "c-live"


def _old_approval(db: sqlite_utils.Database) -> None:
    db["approvals"].insert({"cycle_id": "c-live", "stage": "plan", "status": "waiting",
                            "requested_at": "2026-01-02T10:01:00+00:00", "deadline": "2026-01-03T10:01:00+00:00",
                            "default": "reject", "reason": "", "decided_by": "", "decided_at": None,
                            "flow_run_id": "run-1"})


def _check_approval(store: Store) -> None:
    [waiting] = store.waiting_approvals()
    assert waiting == store.approval("c-live", ApprovalStage.plan)
    assert (waiting.stage, waiting.status, waiting.default, waiting.decided_at) == (
        ApprovalStage.plan, ApprovalStatus.waiting, "reject", None)
    assert store.decide_approval("c-live", ApprovalStage.plan, ApprovalStatus.approved, "fine", "orch approve")
    decided = store.approval("c-live", ApprovalStage.plan)
    assert decided is not None and (decided.status, decided.reason) == (ApprovalStatus.approved, "fine")
    assert store.waiting_approvals() == []


def test_a_store_of_the_first_schema_reads_back_through_the_models(tmp_path: Path) -> None:
    db = _old_store(tmp_path / "app.db", stop_before="m002_backlog_pulls_approvals_budgets")
    assert "approvals" not in db.table_names()
    _old_cycles(db)
    db.close()
    store = Store.for_project(tmp_path, "app")
    _check_cycles(store)
    assert store.waiting_approvals() == []


@pytest.mark.parametrize("stop_before", ["m003_agent_slot_waits", "m004_cycles_table"])
def test_a_store_with_approvals_reads_back_through_the_models(tmp_path: Path, stop_before: str) -> None:
    db = _old_store(tmp_path / "app.db", stop_before=stop_before)
    _old_cycles(db)
    db["project_state"].update("app", {"budget_stop": "", "budget_resets_at": None})  # m002's columns, as written
    _old_approval(db)
    if stop_before == "m004_cycles_table":  # m003 counts slot waits: this cycle had none yet
        assert db["planner_cycles"].get("c-live")["slot_waits"] == 0
    db.close()
    store = Store.for_project(tmp_path, "app")
    _check_approval(store)
    _check_cycles(store)
    names = [r["name"] for r in store.db["_sqlite_migrations"].rows]
    assert names[-1] == "m013_test_results" and len(names) == len(set(names)) == 13
    assert store.state().flaky_on_main == []  # a column added since, read as its default


def test_tasks_whose_work_waited_by_their_last_failure_wait_by_the_column(tmp_path: Path) -> None:
    db = _old_store(tmp_path / "app.db", stop_before="m005_task_waits")
    old = {"description": "", "type": "code", "priority": 3, "attempts": 1, "max_attempts": 3, "source": "planner",
           "fingerprint": "f", "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"}
    db["tasks"].insert_all([
        {**old, "id": "m", "title": "m", "status": "pending", "last_failure": "merge waited: main moved"},
        {**old, "id": "b", "title": "b", "status": "pending", "last_failure": "budget waited: cycle cap $1"},
        {**old, "id": "f", "title": "f", "status": "pending", "last_failure": "judge rejected the change: no"},
        {**old, "id": "d", "title": "d", "status": "done", "last_failure": "merge waited: main moved"},
    ])
    db.close()
    store = Store.for_project(tmp_path, "app")
    # As the words did, the column tells of the wait whatever became of the task since.
    assert {t.id: t.waiting for t in store.list_tasks()} == {
        "m": TaskWait.merge, "b": TaskWait.budget, "f": None, "d": TaskWait.merge}
    assert all(t.depends_on == [] for t in store.list_tasks())  # m009: no task of before waits for another
    assert store.get_task("m").last_failure == "merge waited: main moved"  # the words stay, for people
    assert store.waiting_failure(TaskWait.merge) == "merge waited: main moved"
    # A failure of its own ends the wait.
    store.claim_tasks("c1", 4)
    assert store.fail_attempt("m", "tests failed").waiting is None
    assert store.get_task("m").status is TaskStatus.pending and store.waiting_failure(TaskWait.merge) == ""
