"""The project's state in SQLite: one file per project, WAL mode.

This is the only module that imports ``sqlite_utils``. Text is redacted
(see :mod:`.secrets`) on its way in. Every write is either
a single statement or inside ``db.atomic()``, and every recording method is
an upsert keyed by what it records, so replaying a step after a crash writes
the same rows again instead of new ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils import Migrations

from .errors import StoreError
from .models import Task, TaskStatus, Verdict, WorkResult, utcnow
from .secrets import redact_all

migrations = Migrations("orchestrator")

# Columns of judge_verdicts that hold a Verdict field as JSON text.
_VERDICT_JSON = ("reasons", "tests", "lint", "scope_warnings", "review")


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


def _task_row(task: Task) -> dict[str, Any]:
    row = redact_all(task.model_dump(mode="json"))
    row["fingerprint"] = task.fingerprint
    return row


def _task(row: dict[str, Any]) -> Task:
    return Task.model_validate({k: v for k, v in row.items() if k != "fingerprint"})


PAGE_ORDER = (TaskStatus.in_progress, TaskStatus.in_review, TaskStatus.pending, TaskStatus.failed, TaskStatus.done)


class Store:
    """One project's SQLite database."""

    def __init__(self, path: Path, project: str) -> None:
        self.path = path
        self.project = project
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(path)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.enable_wal()
            migrations.apply(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc

    @classmethod
    def for_project(cls, data_dir: Path, project: str) -> Store:
        """The store of ``project`` under ``data_dir`` (``<data_dir>/<project>.db``)."""
        return cls(data_dir / f"{project}.db", project)

    def close(self) -> None:
        self.db.close()

    # -- tasks -------------------------------------------------------------

    def add_task(self, task: Task) -> Task:
        """Insert a task, or leave it as it is if its id exists (replay-safe)."""
        self.db.table("tasks").insert(_task_row(task), ignore=True)
        return self.get_task(task.id)

    def get_task(self, task_id: str) -> Task:
        try:
            return _task(self.db.table("tasks").get(task_id))
        except sqlite_utils.db.NotFoundError:
            raise StoreError(
                f"unknown task id {task_id!r} in project {self.project!r}: see `orch tasks`"
            ) from None

    def has_task(self, task_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM tasks WHERE id = ?", [task_id]).fetchone() is not None

    def list_tasks(self, status: TaskStatus | None = None, limit: int | None = None) -> list[Task]:
        where, args = ("status = ?", [status.value]) if status else (None, [])
        rows = self.db.table("tasks").rows_where(
            where, args, order_by="priority, created_at", limit=limit
        )
        return [_task(r) for r in rows]

    def tasks_page(self, status: TaskStatus | None = None, limit: int = 0) -> list[Task]:
        """Up to ``limit`` tasks (0: all): in progress, then pending, failed, done; each by priority.

        One index range per status, so a page costs the same in a store of any size.
        """
        found: list[Task] = []
        for wanted in [status] if status else PAGE_ORDER:
            if limit and len(found) == limit:
                break
            found += self.list_tasks(wanted, limit - len(found) if limit else None)
        return found

    def pending_failure(self, prefix: str) -> str:
        """The last failure of a pending task that starts with ``prefix`` ('' if none)."""
        row = self.db.execute(
            "SELECT last_failure FROM tasks WHERE status = 'pending' AND substr(last_failure, 1, ?) = ? LIMIT 1",
            [len(prefix), prefix],
        ).fetchone()
        return row[0] if row else ""

    def tasks_of(self, ids: Iterable[str]) -> list[Task]:
        return [self.get_task(i) for i in ids]

    def count_by_status(self) -> dict[str, int]:
        counts = {s.value: 0 for s in TaskStatus}
        for status, n in self.db.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
            counts[status] = n
        return counts

    def failed_fingerprints(self) -> set[str]:
        """Content fingerprints of every task that failed at least once."""
        rows = self.db.execute(
            "SELECT fingerprint FROM tasks WHERE status = 'failed' OR last_failure != ''"
        )
        return {r[0] for r in rows}

    def live_fingerprints(self) -> set[str]:
        """Fingerprints of tasks that are open or done (re-planning them is a duplicate)."""
        rows = self.db.execute(
            "SELECT fingerprint FROM tasks WHERE status IN ('pending', 'in_progress', 'in_review', 'done')"
        )
        return {r[0] for r in rows}

    def recent_failures(self, limit: int = 10) -> list[Task]:
        rows = self.db.table("tasks").rows_where(
            "last_failure != ''", order_by="updated_at desc", limit=limit
        )
        return [_task(r) for r in rows]

    def claim_tasks(self, cycle_id: str, limit: int) -> list[Task]:
        """Atomically take up to ``limit`` tasks for ``cycle_id``.

        Tasks the cycle already holds (claimed before a crash) come first; then
        pending ones by priority. The claim is one UPDATE statement, so two
        processes can never take the same task.
        """
        held = list(self.db.table("tasks").rows_where(
            "status = 'in_progress' AND claimed_by = ?", [cycle_id], order_by="priority, created_at"
        ))
        wanted = limit - len(held)
        if wanted > 0:
            now = utcnow()
            with self.db.conn:
                self.db.execute(
                    """UPDATE tasks SET status = 'in_progress', claimed_by = ?,
                           attempts = attempts + 1, updated_at = ?
                       WHERE id IN (SELECT id FROM tasks WHERE status = 'pending'
                                    ORDER BY priority, created_at LIMIT ?)
                         AND status = 'pending'""",
                    [cycle_id, now, wanted],
                )
            held = list(self.db.table("tasks").rows_where(
                "status = 'in_progress' AND claimed_by = ?", [cycle_id],
                order_by="priority, created_at",
            ))
        return [_task(r) for r in held[:limit]]

    def update_task(self, task_id: str, **fields: Any) -> Task:
        fields["updated_at"] = utcnow()
        self.db.table("tasks").update(task_id, {k: _plain(v) for k, v in fields.items()})
        return self.get_task(task_id)

    def fail_attempt(self, task_id: str, reason: str) -> Task:
        """An attempt failed: back to pending with the reason, or failed for good."""
        task = self.get_task(task_id)
        status = TaskStatus.failed if task.attempts >= task.max_attempts else TaskStatus.pending
        with self.db.atomic():
            if status is TaskStatus.failed and task.status is not TaskStatus.failed:
                self._update_state(consecutive_failures=self.state()["consecutive_failures"] + 1)
            return self.update_task(
                task_id, status=status, last_failure=reason, claimed_by=None
            )

    def retry_task(self, task_id: str) -> Task:
        """Give a failed task a fresh set of attempts; its last failure still informs the worker."""
        task = self.get_task(task_id)
        if task.status is not TaskStatus.failed:
            raise StoreError(
                f"task {task_id!r} is {task.status.value}, not failed: only a failed task can be retried"
            )
        return self.update_task(task_id, status=TaskStatus.pending, attempts=0, claimed_by=None)

    def release_task(self, task_id: str, reason: str | None = None) -> Task:
        """Give a claimed task back without spending its attempt (nothing was judged of it).

        ``reason`` replaces its last failure when given (a waiting mark); otherwise
        the failure the next attempt must address is kept.
        """
        task = self.get_task(task_id)
        fields: dict[str, Any] = {"status": TaskStatus.pending, "claimed_by": None,
                                  "attempts": max(0, task.attempts - 1)}
        if reason is not None:
            fields["last_failure"] = reason
        return self.update_task(task_id, **fields)

    def linked_tasks(self, backlog_item: str) -> list[Task]:
        """Tasks that do one backlog item."""
        return [_task(r) for r in self.db.table("tasks").rows_where("backlog_item = ?", [backlog_item])]

    def unsynced_backlog(self) -> list[Task]:
        """Done tasks whose backlog item was not closed or ticked yet."""
        rows = self.db.table("tasks").rows_where(
            "status = 'done' AND backlog_item IS NOT NULL AND backlog_item != '' AND NOT backlog_done",
            order_by="updated_at",
        )
        return [_task(r) for r in rows]

    def complete_task(self, task_id: str, merge_commit: str) -> Task:
        with self.db.atomic():
            self._update_state(consecutive_failures=0)  # a success ends a failure streak
            return self.update_task(
                task_id, status=TaskStatus.done, merge_commit=merge_commit, claimed_by=None
            )

    # -- results -------------------------------------------------------------

    def record_work(self, result: WorkResult) -> None:
        row = redact_all(result.model_dump(mode="json"))
        row["files_changed"] = json.dumps(row["files_changed"])
        row["created_at"] = utcnow()
        self.db.table("worker_results").upsert(row, pk=("task_id", "attempt"))

    def record_verdict(self, verdict: Verdict) -> None:
        row = redact_all(verdict.model_dump(mode="json"))
        for key in _VERDICT_JSON:
            row[key] = json.dumps(row[key])
        row["created_at"] = utcnow()
        self.db.table("judge_verdicts").upsert(row, pk=("task_id", "attempt"))

    def record_merge(self, cycle_id: str, task_id: str, commit: str, resolved: bool) -> None:
        self.db.table("merges").upsert(
            {"cycle_id": cycle_id, "task_id": task_id, "commit": commit,
             "resolved_conflict": resolved, "created_at": utcnow()},
            pk=("cycle_id", "task_id"),
        )

    def record_cost(
        self, session_id: str, cycle_id: str, task_id: str | None, role: str, model: str,
        cost_usd: float,
    ) -> None:
        """One agent session's cost; keyed by session so a replay is not counted twice."""
        if not session_id:
            return
        self.db.table("agent_costs").upsert(
            {"session_id": session_id, "cycle_id": cycle_id, "task_id": task_id or "",
             "role": role, "model": model, "cost_usd": cost_usd, "created_at": utcnow()},
            pk="session_id",
        )

    def worker_result(self, task_id: str, attempt: int) -> WorkResult | None:
        """The recorded result of one attempt, if any."""
        try:
            row = dict(self.db.table("worker_results").get((task_id, attempt)))
        except sqlite_utils.db.NotFoundError:
            return None
        row["files_changed"] = json.loads(row["files_changed"] or "[]")
        return WorkResult.model_validate({k: v for k, v in row.items() if k in WorkResult.model_fields})

    def verdict(self, task_id: str, attempt: int) -> Verdict | None:
        """The recorded verdict on one attempt, if any."""
        try:
            row = dict(self.db.table("judge_verdicts").get((task_id, attempt)))
        except sqlite_utils.db.NotFoundError:
            return None
        for key in _VERDICT_JSON:
            row[key] = json.loads(row[key])
        return Verdict.model_validate({k: v for k, v in row.items() if k in Verdict.model_fields})

    def verdicts(self, cycle_id: str | None = None) -> list[dict[str, Any]]:
        where, args = ("cycle_id = ?", [cycle_id]) if cycle_id else (None, [])
        return list(self.db.table("judge_verdicts").rows_where(where, args, order_by="created_at"))

    def merged_task_ids(self, cycle_id: str) -> list[str]:
        rows = self.db.execute("SELECT task_id FROM merges WHERE cycle_id = ?", [cycle_id])
        return [r[0] for r in rows]

    def costs_by_role(self, cycle_id: str | None = None) -> dict[str, float]:
        where, args = ("WHERE cycle_id = ?", [cycle_id]) if cycle_id else ("", [])
        rows = self.db.execute(
            f"SELECT role, sum(cost_usd) FROM agent_costs {where} GROUP BY role", args
        )
        return {role: round(total, 6) for role, total in rows}

    def total_cost(self) -> float:
        return round(sum(self.costs_by_role().values()), 6)

    def cycle_worker_results(self, cycle_id: str) -> list[dict[str, Any]]:
        """Worker results recorded by one cycle, oldest first."""
        return list(self.db.table("worker_results").rows_where(
            "cycle_id = ?", [cycle_id], order_by="created_at, task_id"
        ))

    def merges(self, cycle_id: str) -> list[dict[str, Any]]:
        """The merges of one cycle: task id, merge commit, whether a conflict was resolved."""
        return list(self.db.table("merges").rows_where(
            "cycle_id = ?", [cycle_id], order_by="created_at, task_id"
        ))

    def cycle_cost(self, cycle_id: str) -> float:
        """What one cycle's recorded sessions cost."""
        row = self.db.execute("SELECT sum(cost_usd) FROM agent_costs WHERE cycle_id = ?", [cycle_id]).fetchone()
        return float(row[0] or 0.0)

    def cost_since(self, since: str) -> float:
        """What the sessions recorded at or after ``since`` (an ISO time) cost."""
        row = self.db.execute("SELECT sum(cost_usd) FROM agent_costs WHERE created_at >= ?", [since]).fetchone()
        return float(row[0] or 0.0)

    def recorded_sessions(self, session_ids: Iterable[str]) -> set[str]:
        """Which of ``session_ids`` have a recorded cost."""
        ids = list(session_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT session_id FROM agent_costs WHERE session_id IN ({marks})", ids)
        return {r[0] for r in rows}

    def cost_breakdown(self, cycle_id: str | None = None) -> list[dict[str, Any]]:
        """Cost and session count by role, model and UTC day (``created_at``'s date)."""
        where, args = ("WHERE cycle_id = ?", [cycle_id]) if cycle_id else ("", [])
        rows = self.db.execute(
            f"""SELECT role, model, substr(created_at, 1, 10) AS day, sum(cost_usd), count(*)
                FROM agent_costs {where} GROUP BY role, model, day ORDER BY day, role, model""",
            args,
        )
        return [
            {"role": role, "model": model, "day": day, "cost_usd": round(total, 6), "sessions": n}
            for role, model, day, total, n in rows
        ]

    # -- cycles ------------------------------------------------------------------

    def start_cycle(self, cycle_id: str, base_commit: str, flow_run_id: str = "") -> None:
        self.db.table("planner_cycles").insert(
            {"id": cycle_id, "status": "running", "base_commit": base_commit,
             "started_at": utcnow(), "finished_at": None, "plan_path": "", "planned": "[]", "claimed": "",
             "cost_usd": 0.0, "session_id": "", "summary": "{}", "message": "",
             "flow_run_id": flow_run_id},
            ignore=True,
        )

    def get_cycle(self, cycle_id: str) -> dict[str, Any]:
        rows = self.find_cycles(cycle_id)
        if len(rows) != 1:
            raise StoreError(
                f"unknown cycle id {cycle_id!r} in project {self.project!r}: see `orch cycles`"
            )
        return rows[0]

    def unfinished_cycle(self) -> dict[str, Any] | None:
        """The cycle that was running when the orchestrator last stopped, if any."""
        running = self.running_cycles()
        return running[0] if running else None

    def running_cycles(self) -> list[dict[str, Any]]:
        """Cycles still marked running, newest first (all but one belong to dead runs)."""
        return list(self.db.table("planner_cycles").rows_where("status = 'running'", order_by="started_at desc"))

    def update_cycle(self, cycle_id: str, **fields: Any) -> None:
        self.db.table("planner_cycles").update(cycle_id, {k: _plain(v) for k, v in fields.items()})

    def finish_cycle(self, cycle_id: str, status: str, summary: dict[str, Any], message: str = "") -> None:
        self.update_cycle(
            cycle_id, status=status, finished_at=utcnow(), summary=summary, message=message,
            cost_usd=round(self.cycle_cost(cycle_id), 6),
        )
        self._update_state(last_cycle_id=cycle_id, last_cycle_at=utcnow())

    def slot_wait_began(self, cycle_id: str) -> None:
        """A session of ``cycle_id`` waits for a slot of the portfolio's agent cap."""
        with self.db.atomic():
            self.db.execute("UPDATE planner_cycles SET slot_waiting = slot_waiting + 1, "
                            "slot_waits = slot_waits + 1 WHERE id = ?", [cycle_id])

    def slot_wait_ended(self, cycle_id: str, waited_s: float) -> None:
        with self.db.atomic():
            self.db.execute("UPDATE planner_cycles SET slot_waiting = max(slot_waiting - 1, 0), "
                            "slot_wait_s = slot_wait_s + ? WHERE id = ?", [round(waited_s, 3), cycle_id])

    def list_cycles(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.db.table("planner_cycles").rows_where(order_by="started_at desc", limit=limit))

    def find_cycles(self, prefix: str, limit: int = 2) -> list[dict[str, Any]]:
        """Cycles whose id starts with ``prefix`` (exactly: ``_`` and ``%`` are not wildcards)."""
        return list(self.db.table("planner_cycles").rows_where(
            "substr(id, 1, length(?)) = ?", [prefix, prefix], order_by="id", limit=limit
        ))

    # -- approvals -------------------------------------------------------------------

    def request_approval(self, cycle_id: str, stage: str, deadline: str, default: str, flow_run_id: str) -> dict[str, Any]:
        """Record that ``cycle_id`` waits for approval of ``stage``; the existing request if any."""
        self.db.table("approvals").insert(
            {"cycle_id": cycle_id, "stage": stage, "status": "waiting", "requested_at": utcnow(),
             "deadline": deadline, "default": default, "reason": "", "decided_by": "", "decided_at": None,
             "flow_run_id": flow_run_id},
            ignore=True,
        )
        return self.approval(cycle_id, stage) or {}

    def approval(self, cycle_id: str, stage: str) -> dict[str, Any] | None:
        try:
            return dict(self.db.table("approvals").get((cycle_id, stage)))
        except sqlite_utils.db.NotFoundError:
            return None

    def waiting_approvals(self) -> list[dict[str, Any]]:
        """Requests nobody decided yet, oldest first."""
        return list(self.db.table("approvals").rows_where("status = 'waiting'", order_by="requested_at"))

    def decide_approval(self, cycle_id: str, stage: str, status: str, reason: str, decided_by: str) -> bool:
        """Decide a waiting request; False when it was decided already (the first decision stands)."""
        with self.db.conn:
            cursor = self.db.execute(
                """UPDATE approvals SET status = ?, reason = ?, decided_by = ?, decided_at = ?
                   WHERE cycle_id = ? AND stage = ? AND status = 'waiting'""",
                [status, redact_all(reason), decided_by, utcnow(), cycle_id, stage],
            )
        return cursor.rowcount == 1

    # -- project state -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        try:
            return dict(self.db.table("project_state").get(self.project))
        except sqlite_utils.db.NotFoundError:
            return {"name": self.project, "paused": False, "paused_reason": "",
                    "consecutive_failures": 0, "last_cycle_id": None, "last_cycle_at": None,
                    "budget_stop": "", "budget_resets_at": None}

    def set_paused(self, paused: bool, reason: str = "") -> None:
        """Pause or resume; resuming also forgives the failure streak that may have paused it."""
        if paused:
            self._update_state(paused=True, paused_reason=reason)
        else:
            self._update_state(paused=False, paused_reason="", consecutive_failures=0)

    def set_budget_stop(self, message: str, resets_at: str | None) -> None:
        """Which cap stopped the work and when it resets ('' clears it)."""
        self._update_state(budget_stop=message, budget_resets_at=resets_at)

    def _update_state(self, **fields: Any) -> None:
        row = self.state() | fields | {"updated_at": utcnow()}
        self.db.table("project_state").upsert(row, pk="name")


def _plain(value: Any) -> Any:
    """Store enums as their value, containers as JSON text, and no secret at all."""
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, (dict, list)):
        return json.dumps(redact_all(value))
    return redact_all(value)
