"""The store's schema, as the migrations that build it (sqlite-utils ``Migrations``).

Next to :mod:`.store`, this is the only other module that imports
``sqlite_utils``. A migration, once released, never changes: a store of any
earlier schema is brought up to date by applying the ones it lacks, in order,
each in its own transaction (``tests/test_store_migrations.py`` builds a
store at each earlier step and opens it). Column types are SQLite's; what
the columns mean is documented on the models of :mod:`orchestrator.domain.models` and
:mod:`orchestrator.domain.state` that the store reads them into.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

migrations = Migrations("orchestrator")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("tasks").create(
        {
            "id": str, "title": str, "description": str, "type": str, "priority": int,
            "status": str, "attempts": int, "max_attempts": int, "source": str,
            "cycle_id": str, "claimed_by": str, "branch": str, "last_failure": str,
            "merge_commit": str, "fingerprint": str, "created_at": str, "updated_at": str,
        },
        pk="id",
    )
    db.table("tasks").create_index(["status", "priority", "created_at"])
    db.table("tasks").create_index(["fingerprint"])
    db.table("worker_results").create(
        {
            "task_id": str, "attempt": int, "cycle_id": str, "branch": str, "base_commit": str,
            "commit": str, "success": bool, "error": str, "summary": str, "diff_stat": str,
            "files_changed": str, "cost_usd": float, "duration_s": float, "num_turns": int,
            "session_id": str, "created_at": str,
        },
        pk=("task_id", "attempt"),
    )
    db.table("judge_verdicts").create(
        {
            "task_id": str, "attempt": int, "cycle_id": str, "commit": str, "passed": bool,
            "reasons": str, "tests": str, "lint": str, "scope_warnings": str, "review": str,
            "cost_usd": float, "session_id": str, "created_at": str,
        },
        pk=("task_id", "attempt"),
    )
    db.table("planner_cycles").create(
        {
            "id": str, "status": str, "base_commit": str, "started_at": str,
            "finished_at": str, "plan_path": str, "planned": str, "claimed": str, "cost_usd": float,
            "session_id": str, "summary": str, "message": str, "flow_run_id": str,
        },
        pk="id",
    )
    db.table("planner_cycles").create_index(["status"])
    db.table("merges").create(
        {"cycle_id": str, "task_id": str, "commit": str, "resolved_conflict": bool,
         "created_at": str},
        pk=("cycle_id", "task_id"),
    )
    db.table("agent_costs").create(
        {"session_id": str, "cycle_id": str, "task_id": str, "role": str, "model": str,
         "cost_usd": float, "created_at": str},
        pk="session_id",
    )
    db.table("project_state").create(
        {"name": str, "paused": bool, "paused_reason": str, "consecutive_failures": int,
         "last_cycle_id": str, "last_cycle_at": str, "updated_at": str},
        pk="name",
    )


@migrations()
def m002_backlog_pulls_approvals_budgets(db: sqlite_utils.Database) -> None:
    tasks = db.table("tasks")
    tasks.add_column("backlog_item", str)
    tasks.add_column("backlog_done", bool, not_null_default=False)
    tasks.add_column("pr_number", int)
    tasks.add_column("pr_url", str)
    tasks.create_index(["backlog_item"])
    db.table("approvals").create(
        {"cycle_id": str, "stage": str, "status": str, "requested_at": str, "deadline": str,
         "default": str, "reason": str, "decided_by": str, "decided_at": str, "flow_run_id": str},
        pk=("cycle_id", "stage"),
    )
    state = db.table("project_state")
    state.add_column("budget_stop", str)
    state.add_column("budget_resets_at", str)
    db.table("worker_results").add_column("budget_stop", str, not_null_default="")
    db.table("judge_verdicts").add_column("budget_stop", str, not_null_default="")
    db.table("agent_costs").create_index(["created_at"])
    db.table("agent_costs").create_index(["cycle_id"])


@migrations()
def m003_agent_slot_waits(db: sqlite_utils.Database) -> None:
    cycles = db.table("planner_cycles")
    cycles.add_column("slot_waiting", int, not_null_default=0)  # sessions waiting right now
    cycles.add_column("slot_waits", int, not_null_default=0)  # sessions that had to wait
    cycles.add_column("slot_wait_s", float, not_null_default=0.0)  # their waits, added up


@migrations()
def m004_cycles_table(db: sqlite_utils.Database) -> None:
    # The table holds every cycle, not the planner's part of one. ALTER TABLE keeps its
    # rows and its index; the index is re-made under the name a new table's would have.
    db.rename_table("planner_cycles", "cycles")
    db.execute("DROP INDEX IF EXISTS idx_planner_cycles_status")
    db.table("cycles").create_index(["status"])


@migrations()
def m005_task_waits(db: sqlite_utils.Database) -> None:
    # Which wait a task's kept work is in was told only by how its last failure began; the
    # words stay there for people, and the column, set wherever they are, is what the code reads.
    db.table("tasks").add_column("waiting", str)  # NULL: its last failure is no wait
    for kind, words in (("merge", "merge waited: "), ("budget", "budget waited: ")):
        db.execute("UPDATE tasks SET waiting = ? WHERE substr(last_failure, 1, ?) = ?", [kind, len(words), words])


@migrations()
def m006_api_faults(db: sqlite_utils.Database) -> None:
    # A session the model API kept failing gives its task back instead of spending its attempt.
    db.table("worker_results").add_column("api_fault", str, not_null_default="")
    db.table("judge_verdicts").add_column("api_fault", str, not_null_default="")


@migrations()
def m007_rate_limits_and_retention(db: sqlite_utils.Database) -> None:
    # A rate or usage limit parks the project until its reset.
    db.table("project_state").add_column("rate_limited_until", str)
    db.table("project_state").add_column("rate_limit_reason", str, not_null_default="")
    # Retention has collected what cycles that finished until then left.
    db.table("project_state").add_column("collected_through", str)


@migrations()
def m008_flaky_on_main(db: sqlite_utils.Database) -> None:
    # Tests that failed on the base and passed when run again: `orch status` names them.
    db.table("project_state").add_column("flaky_on_main", str, not_null_default="[]")
    db.table("project_state").add_column("flaky_on_main_commit", str, not_null_default="")


@migrations()
def m009_task_dependencies(db: sqlite_utils.Database) -> None:
    # A task is claimed only once the tasks it depends on are done (a JSON list of their ids).
    db.table("tasks").add_column("depends_on", str, not_null_default="[]")


@migrations()
def m010_ci_fix_rounds(db: sqlite_utils.Database) -> None:
    # A pull request whose CI failed goes back to its worker, once per head commit, a few times.
    db.table("tasks").add_column("ci_fixes", int, not_null_default=0)
    db.table("tasks").add_column("ci_seen_sha", str, not_null_default="")


@migrations()
def m011_review_rounds(db: sqlite_utils.Database) -> None:
    # Review comments on a pull request go back to its worker; each is read once and answered.
    db.table("tasks").add_column("review_rounds", int, not_null_default=0)
    db.table("tasks").add_column("review_seen", str, not_null_default="[]")
    db.table("tasks").add_column("review_replies", str, not_null_default="[]")


@migrations()
def m012_plan_inputs(db: sqlite_utils.Database) -> None:
    # The planner is asked again only when what it reads changed: the digest of its last read.
    db.table("project_state").add_column("planned_inputs", str, not_null_default="")
    db.table("project_state").add_column("planned_at", str)
    db.table("project_state").add_column("found_work_at", str)


@migrations()
def m013_test_results(db: sqlite_utils.Database) -> None:
    # A tree tested once is not tested again: its result, by what decides it (see stages.test_runs).
    db.table("test_results").create(
        {"key": str, "tree": str, "command": str, "result": str, "tested_at": str}, pk="key",
    )
    db.table("test_results").create_index(["tested_at"])
