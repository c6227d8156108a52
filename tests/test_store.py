"""The store on real SQLite files: migrations, atomic claims, task life."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import sqlite_utils

from orchestrator.adapters.store import Store
from orchestrator.adapters.store_migrations import migrations
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import (
    CycleStatus,
    CycleSummary,
    Task,
    TaskStatus,
    Verdict,
    WorkResult,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.for_project(tmp_path, "proj")


def test_schema_is_migrated_once_and_uses_wal(tmp_path: Path) -> None:
    first = Store.for_project(tmp_path, "proj")
    again = Store.for_project(tmp_path, "proj")  # reopening applies nothing twice
    tables = set(again.db.table_names())
    assert {"tasks", "worker_results", "judge_verdicts", "cycles", "project_state"} <= tables
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r["name"] for r in first.db["_sqlite_migrations"].rows]
    assert names == ["m001_initial", "m002_backlog_pulls_approvals_budgets", "m003_agent_slot_waits",
                     "m004_cycles_table", "m005_task_waits", "m006_api_faults",
                     "m007_rate_limits_and_retention", "m008_flaky_on_main",
                     "m009_task_dependencies", "m010_ci_fix_rounds", "m011_review_rounds",
                     "m012_plan_inputs", "m013_test_results"]


def test_a_store_of_the_first_schema_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite_utils

    from orchestrator.adapters.store_migrations import m001_initial

    db = sqlite_utils.Database(tmp_path / "proj.db")
    m001_initial(db)  # a store as the first release left it, with a task in it
    db["tasks"].insert({"id": "t1", "title": "Old task", "status": "pending", "attempts": 0, "max_attempts": 3,
                        "description": "", "type": "code", "priority": 3, "source": "manual", "last_failure": "",
                        "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"})
    db.conn.execute("CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, applied_at TEXT)")
    db["_sqlite_migrations"].insert({"migration_set": "orchestrator", "name": "m001_initial", "applied_at": "x"})
    db.close()
    store = Store.for_project(tmp_path, "proj")
    old = store.get_task("t1")
    assert old.title == "Old task" and old.backlog_item is None and not old.backlog_done
    assert store.update_task("t1", pr_url="http://x/pull/1").pr_url == "http://x/pull/1"


def test_add_task_is_replay_safe(store: Store) -> None:
    task = Task(id="t1", title="Do it")
    store.add_task(task)
    store.add_task(task.model_copy(update={"title": "changed"}))
    assert [t.title for t in store.list_tasks()] == ["Do it"]


def test_claim_takes_by_priority_and_is_stable_for_its_cycle(store: Store) -> None:
    for i, priority in enumerate([3, 1, 2, 5]):
        store.add_task(Task(id=f"t{i}", title=f"task {i}", priority=priority))
    claimed = store.claim_tasks("c1", 2)
    assert [t.id for t in claimed] == ["t1", "t2"]
    assert all(t.status is TaskStatus.in_progress and t.attempts == 1 for t in claimed)
    # The same cycle asking again (after a crash) gets the same tasks, attempts unchanged.
    assert [(t.id, t.attempts) for t in store.claim_tasks("c1", 2)] == [("t1", 1), ("t2", 1)]
    assert [t.id for t in store.claim_tasks("c2", 5)] == ["t0", "t3"]


def test_failed_attempts_return_to_pending_until_retries_run_out(store: Store) -> None:
    store.add_task(Task(id="t", title="flaky", max_attempts=2))
    store.claim_tasks("c1", 1)
    assert store.fail_attempt("t", "tests failed").status is TaskStatus.pending
    store.claim_tasks("c2", 1)
    task = store.fail_attempt("t", "tests failed again")
    assert task.status is TaskStatus.failed and task.last_failure == "tests failed again"
    assert task.fingerprint in store.failed_fingerprints()


def test_results_and_costs_are_keyed_so_replays_do_not_double_count(store: Store) -> None:
    result = WorkResult(task_id="t", cycle_id="c", attempt=1, branch="orch/t", base_commit="b", success=True, cost_usd=0.5)
    store.record_work(result)
    store.record_work(result)
    store.record_verdict(Verdict(task_id="t", cycle_id="c", attempt=1, commit="x", passed=True))
    store.record_verdict(Verdict(task_id="t", cycle_id="c", attempt=1, commit="x", passed=True))
    store.record_cost("s1", "c", "t", "worker", "sonnet", 0.5)
    store.record_cost("s1", "c", "t", "worker", "sonnet", 0.5)
    store.record_cost("s2", "c", None, "planner", "opus", 0.25)
    assert store.db.table("worker_results").count == 1 and len(store.verdicts("c")) == 1
    assert store.worker_result("t", 1) == result  # read back as recorded
    assert store.verdict("t", 1) == Verdict(task_id="t", cycle_id="c", attempt=1, commit="x", passed=True)
    assert store.costs_by_role("c") == {"worker": 0.5, "planner": 0.25}
    assert store.total_cost() == 0.75


def test_unknown_ids_are_clear_errors(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown task id 'nope' in project 'proj'"):
        store.get_task("nope")
    with pytest.raises(StoreError, match="unknown cycle id"):
        store.get_cycle("nope")


def test_cycles_and_pause_state(store: Store) -> None:
    store.start_cycle("c1", "abc")
    unfinished = store.unfinished_cycle()
    assert unfinished is not None and unfinished.id == "c1"
    store.finish_cycle(CycleSummary(project="proj", cycle_id="c1", status=CycleStatus.done))
    assert store.unfinished_cycle() is None
    store.set_paused(True, "too many failures")
    assert store.state().paused and store.state().paused_reason == "too many failures"
    store.set_paused(False)
    assert not store.state().paused and store.state().last_cycle_id == "c1"


def _open_new(folder: str, rounds: int, start, out: multiprocessing.Queue) -> None:
    for round_ in range(rounds):
        start.wait()  # every process opens the round's new store at the same instant
        try:
            Store(Path(folder) / f"proj{round_}.db", "proj").close()
            out.put("opened")
        except StoreError as exc:
            out.put(str(exc))


def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    """`orch start`'s first cycles and a user's `orch status` can meet on a store nobody made yet."""
    ctx = multiprocessing.get_context("spawn")  # a fork of a pytest-xdist worker would take its channels along
    rounds, count = 10, 6  # a race: give it several chances
    queue, start = ctx.Queue(), ctx.Barrier(count)
    procs = [ctx.Process(target=_open_new, args=(str(tmp_path), rounds, start, queue)) for _ in range(count)]
    for p in procs:
        p.start()
    outcomes = [queue.get(timeout=120) for _ in range(rounds * count)]
    for p in procs:
        p.join(timeout=30)
    assert outcomes == ["opened"] * rounds * count, [o for o in outcomes if o != "opened"]
    expected = len(migrations.pending(sqlite_utils.Database(memory=True)))
    for round_ in range(rounds):
        store = Store(tmp_path / f"proj{round_}.db", "proj")
        assert len(store.db.execute("select name from _sqlite_migrations").fetchall()) == expected


def _claim_all(db_path: str, cycle_id: str, start, out: multiprocessing.Queue) -> None:
    store = Store(Path(db_path), "proj")
    got: list[str] = []
    start.wait()  # both processes claim at the same time
    while batch := store.claim_tasks(f"{cycle_id}-{len(got)}", 2):
        got += [t.id for t in batch]
        time.sleep(0.002)  # as a cycle would do work between claims: the two interleave
    out.put(got)


def test_two_processes_never_claim_the_same_task(tmp_path: Path) -> None:
    store = Store.for_project(tmp_path, "proj")
    for i in range(300):
        store.add_task(Task(id=f"t{i:03}", title=f"task {i}"))
    ctx = multiprocessing.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_claim_all, args=(str(store.path), name, start, queue)) for name in ("a", "b")]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    first, second = results
    assert not set(first) & set(second)
    assert sorted(first + second) == [f"t{i:03}" for i in range(300)]
    assert first and second  # both really took part


def test_a_failure_recorded_while_another_connection_writes_waits_its_turn(tmp_path: Path) -> None:
    # The steps' recordings run in threads, each on its own connection: a read-then-write
    # transaction must not fail because another connection wrote between its read and its write.
    store = Store.for_project(tmp_path, "proj")
    task = store.add_task(Task(title="t", description="d", max_attempts=1))
    store.claim_tasks("c1", 1)
    wrote = threading.Event()

    def write_meanwhile() -> None:
        Store.for_project(tmp_path, "proj").set_paused(True, "by a user")
        wrote.set()

    with store.transaction():
        streak = store.state().consecutive_failures  # the read: a snapshot from here on
        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        assert not wrote.wait(0.3)  # the other connection waits for this transaction
        store.fail_attempt(task.id, "tests failed")
    writer.join(10)
    state = store.state()
    assert (state.consecutive_failures, state.paused) == (streak + 1, True)  # neither write lost
    assert store.get_task(task.id).status is TaskStatus.failed
