"""The project's state in SQLite: one file per project, WAL mode.

With its migrations (:mod:`.store_migrations`), its cost ledger
(:mod:`.store_costs`), its task graph (:mod:`.store_dependencies`) and its
approvals and project state (:mod:`.store_records`), the only module that
imports ``sqlite_utils``. Tasks, results, cycles, approval requests and the
project's state come out as models, read from their rows (and written to
them) by :mod:`.store_rows`; merges and cost sums, with no JSON or status in
them, stay rows. Every write is a single statement or inside
:meth:`Store.transaction`, and every recording method is an upsert keyed by
what it records, so replaying a step after a crash writes the same rows again
instead of new ones.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from orchestrator.adapters import store_rows as codec
from orchestrator.adapters.store_costs import CostLedger
from orchestrator.adapters.store_dependencies import READY, Dependencies
from orchestrator.adapters.store_migrations import migrations
from orchestrator.adapters.store_records import ProjectRecords
from orchestrator.adapters.store_test_results import TestResults
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import (
    CycleStatus,
    CycleSummary,
    Task,
    TaskStatus,
    TaskWait,
    Verdict,
    Wait,
    WorkResult,
    utcnow,
)
from orchestrator.domain.state import Cycle, MergeRecord

PAGE_ORDER = (TaskStatus.in_progress, TaskStatus.in_review, TaskStatus.pending, TaskStatus.blocked,
              TaskStatus.failed, TaskStatus.done)


def is_paused(data_dir: Path, project: str) -> bool:
    """Whether ``project`` is paused, read from its store (opened and closed here)."""
    with closing(Store.for_project(data_dir, project)) as store:
        return store.state().paused


BUSY_TIMEOUT_S = 30
"""How long a statement waits for another connection's write lock."""


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch a store to WAL, waiting out other processes that switch the same new store.

    The switch takes the database exclusively and does not wait for a lock as
    statements do: it fails at once with "database is locked" while another
    process opens the same new store.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.enable_wal()  # no-op once it is WAL
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store(CostLedger, Dependencies, ProjectRecords, TestResults):
    """One project's SQLite database."""

    def __init__(self, path: Path, project: str) -> None:
        self.path = path
        self.project = project
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(path)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
            _enable_wal(self.db)
            if migrations.pending(self.db):
                # Under the write lock: two processes that open a new store at once
                # would otherwise both apply its first migration, and one fail.
                with self.transaction():
                    migrations.apply(self.db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements that commit together, holding the write lock from the start.

        A deferred transaction that reads and then writes fails at once
        ("database is locked", no busy wait) if another connection wrote in
        between; the steps' recordings run in threads, each on a connection of
        its own, so taking the lock first is what lets them wait their turn.
        """
        if self.db.conn.in_transaction:  # nested: a savepoint of the outer one
            with self.db.atomic():
                yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.rollback()
            raise
        self.db.execute("COMMIT")

    @classmethod
    def for_project(cls, data_dir: Path, project: str) -> Store:
        """The store of ``project`` under ``data_dir`` (``<data_dir>/<project>.db``)."""
        return cls(data_dir / f"{project}.db", project)

    def close(self) -> None:
        self.db.close()

    # -- tasks -------------------------------------------------------------

    def add_task(self, task: Task) -> Task:
        """Insert a task, or leave it as it is if its id exists (replay-safe).

        Its prerequisites must exist; one that failed for good makes it blocked.
        """
        with self.transaction():
            task = self.check_prerequisites(task)
            self.db.table("tasks").insert(codec.task_row(task), ignore=True)
        return self.get_task(task.id)

    def get_task(self, task_id: str) -> Task:
        try:
            return codec.task_from(self.db.table("tasks").get(task_id))
        except sqlite_utils.db.NotFoundError:
            raise StoreError(f"unknown task id {task_id!r} in project {self.project!r}: see `orch tasks`") from None

    def has_task(self, task_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM tasks WHERE id = ?", [task_id]).fetchone() is not None

    def list_tasks(self, status: TaskStatus | None = None, limit: int | None = None) -> list[Task]:
        where, args = ("status = ?", [status.value]) if status else (None, [])
        rows = self.db.table("tasks").rows_where(
            where, args, order_by="priority, created_at", limit=limit
        )
        return [codec.task_from(r) for r in rows]

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

    def waiting_failure(self, kind: TaskWait) -> str:
        """The last failure of a pending task whose work waits for ``kind`` ('' if none)."""
        row = self.db.execute(
            "SELECT last_failure FROM tasks WHERE status = 'pending' AND waiting = ? LIMIT 1", [kind.value],
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
            "SELECT fingerprint FROM tasks WHERE status IN ('pending', 'in_progress', 'in_review', 'blocked', 'done')"
        )
        return {r[0] for r in rows}

    def recent_failures(self, limit: int = 10) -> list[Task]:
        rows = self.db.table("tasks").rows_where(
            "last_failure != ''", order_by="updated_at desc", limit=limit
        )
        return [codec.task_from(r) for r in rows]

    def claim_tasks(self, cycle_id: str, limit: int) -> list[Task]:
        """Atomically take up to ``limit`` tasks for ``cycle_id``.

        Tasks the cycle already holds (claimed before a crash) come first; then
        pending ones whose prerequisites are all done, by priority. The claim is
        one UPDATE statement, so two processes can never take the same task.
        """
        held = list(self.db.table("tasks").rows_where(
            "status = 'in_progress' AND claimed_by = ?", [cycle_id], order_by="priority, created_at"
        ))
        wanted = limit - len(held)
        if wanted > 0:
            now = utcnow()
            with self.db.conn:
                self.db.execute(
                    f"""UPDATE tasks SET status = 'in_progress', claimed_by = ?,
                           attempts = attempts + 1, updated_at = ?
                       WHERE id IN (SELECT t.id FROM tasks AS t WHERE t.status = 'pending' AND {READY}
                                    ORDER BY t.priority, t.created_at LIMIT ?)
                         AND status = 'pending'""",
                    [cycle_id, now, wanted],
                )
            held = list(self.db.table("tasks").rows_where(
                "status = 'in_progress' AND claimed_by = ?", [cycle_id],
                order_by="priority, created_at",
            ))
        return [codec.task_from(r) for r in held[:limit]]

    def update_task(self, task_id: str, **fields: Any) -> Task:
        """Set fields of a task; a new ``last_failure`` ends a wait unless ``waiting`` is given too.

        A task that fails for good blocks the tasks that depend on it.
        """
        if "last_failure" in fields:
            fields.setdefault("waiting", None)
        fields["updated_at"] = utcnow()
        with self.transaction():
            self.db.table("tasks").update(task_id, {k: codec.plain(v) for k, v in fields.items()})
            if fields.get("status") == TaskStatus.failed:
                self.block_dependents(task_id)
        return self.get_task(task_id)

    def fail_attempt(self, task_id: str, reason: str) -> Task:
        """An attempt failed: back to pending with the reason, or failed for good."""
        task = self.get_task(task_id)
        status = TaskStatus.failed if task.attempts >= task.max_attempts else TaskStatus.pending
        with self.transaction():
            if status is TaskStatus.failed and task.status is not TaskStatus.failed:
                self._update_state(consecutive_failures=self.state().consecutive_failures + 1)
            return self.update_task(
                task_id, status=status, last_failure=reason, claimed_by=None
            )

    def retry_task(self, task_id: str) -> Task:
        """Give a failed task a fresh set of attempts; its last failure still informs the worker."""
        task = self.get_task(task_id)
        if task.status is TaskStatus.blocked:
            roots = ", ".join(t.id for t in self.failed_roots(task))
            raise StoreError(f"task {task_id!r} is blocked by failed task(s) {roots}: retry those instead")
        if task.status is not TaskStatus.failed:
            raise StoreError(
                f"task {task_id!r} is {task.status.value}, not failed: only a failed task can be retried"
            )
        with self.transaction():
            retried = self.update_task(task_id, status=TaskStatus.pending, attempts=0, claimed_by=None)
            self.unblock_dependents(task_id)
        return retried

    def release_task(self, task_id: str, wait: Wait | None = None) -> Task:
        """Give a claimed task back without spending its attempt (nothing was judged of it).

        With ``wait``, its finished work waits (it keeps its worktree) and its last
        failure says why; otherwise it is back as it was, its last failure (and any
        wait) kept for the next attempt.
        """
        task = self.get_task(task_id)
        fields: dict[str, Any] = {"status": TaskStatus.pending, "claimed_by": None,
                                  "attempts": max(0, task.attempts - 1)}
        if wait is not None:
            fields |= {"last_failure": wait.mark, "waiting": wait.kind}
        return self.update_task(task_id, **fields)

    def linked_tasks(self, backlog_item: str) -> list[Task]:
        """Tasks that do one backlog item."""
        return [codec.task_from(r) for r in self.db.table("tasks").rows_where("backlog_item = ?", [backlog_item])]

    def unsynced_backlog(self) -> list[Task]:
        """Done tasks whose backlog item was not closed or ticked yet."""
        rows = self.db.table("tasks").rows_where(
            "status = 'done' AND backlog_item IS NOT NULL AND backlog_item != '' AND NOT backlog_done",
            order_by="updated_at",
        )
        return [codec.task_from(r) for r in rows]

    def complete_task(self, task_id: str, merge_commit: str) -> Task:
        with self.transaction():
            self._update_state(consecutive_failures=0)  # a success ends a failure streak
            return self.update_task(
                task_id, status=TaskStatus.done, merge_commit=merge_commit, claimed_by=None
            )

    # -- results -------------------------------------------------------------

    def record_work(self, result: WorkResult) -> None:
        self.db.table("worker_results").upsert(codec.work_row(result), pk=("task_id", "attempt"))

    def record_verdict(self, verdict: Verdict) -> None:
        self.db.table("judge_verdicts").upsert(codec.verdict_row(verdict), pk=("task_id", "attempt"))

    def record_merge(self, cycle_id: str, task_id: str, commit: str, resolved: bool) -> None:
        self.db.table("merges").upsert(
            {"cycle_id": cycle_id, "task_id": task_id, "commit": commit,
             "resolved_conflict": resolved, "created_at": utcnow()},
            pk=("cycle_id", "task_id"),
        )

    def worker_result(self, task_id: str, attempt: int) -> WorkResult | None:
        """The recorded result of one attempt, if any."""
        try:
            return codec.work_from(self.db.table("worker_results").get((task_id, attempt)))
        except sqlite_utils.db.NotFoundError:
            return None

    def recent_worker_seconds(self, limit: int) -> list[float]:
        """How long the last ``limit`` successful worker sessions took (newest first)."""
        rows = self.db.execute("SELECT duration_s FROM worker_results WHERE success "
                               "ORDER BY created_at DESC LIMIT ?", [limit])
        return [float(r[0]) for r in rows if r[0] is not None]

    def verdict(self, task_id: str, attempt: int) -> Verdict | None:
        """The recorded verdict on one attempt, if any."""
        try:
            return codec.verdict_from(self.db.table("judge_verdicts").get((task_id, attempt)))
        except sqlite_utils.db.NotFoundError:
            return None

    def verdicts(self, cycle_id: str | None = None) -> list[Verdict]:
        """The verdicts recorded by one cycle (or by all), oldest first."""
        where, args = ("cycle_id = ?", [cycle_id]) if cycle_id else (None, [])
        rows = self.db.table("judge_verdicts").rows_where(where, args, order_by="created_at")
        return [codec.verdict_from(r) for r in rows]

    def merged_task_ids(self, cycle_id: str) -> list[str]:
        rows = self.db.execute("SELECT task_id FROM merges WHERE cycle_id = ?", [cycle_id])
        return [r[0] for r in rows]

    def cycle_worker_results(self, cycle_id: str) -> list[WorkResult]:
        """Worker results recorded by one cycle, oldest first."""
        rows = self.db.table("worker_results").rows_where(
            "cycle_id = ?", [cycle_id], order_by="created_at, task_id"
        )
        return [codec.work_from(r) for r in rows]

    def merges(self, cycle_id: str) -> list[MergeRecord]:
        """The merges of one cycle, in the order they were made."""
        rows = self.db.table("merges").rows_where("cycle_id = ?", [cycle_id], order_by="created_at, task_id")
        return [MergeRecord.model_validate(r) for r in rows]

    # -- cycles ------------------------------------------------------------------

    def start_cycle(self, cycle_id: str, base_commit: str, flow_run_id: str = "") -> None:
        """Record a new running cycle (nothing if ``cycle_id`` exists: replay-safe)."""
        cycle = Cycle(id=cycle_id, status=CycleStatus.running, base_commit=base_commit,
                      started_at=utcnow(), flow_run_id=flow_run_id)
        self.db.table("cycles").insert(codec.cycle_row(cycle), ignore=True)

    def get_cycle(self, cycle_id: str) -> Cycle:
        """The one cycle whose id is or starts with ``cycle_id``; StoreError if none or several."""
        found = self.find_cycles(cycle_id)
        if len(found) != 1:
            raise StoreError(f"unknown cycle id {cycle_id!r} in project {self.project!r}: see `orch cycles`")
        return found[0]

    def unfinished_cycle(self) -> Cycle | None:
        """The cycle that was running when the orchestrator last stopped, if any."""
        running = self.running_cycles()
        return running[0] if running else None

    def running_cycles(self) -> list[Cycle]:
        """Cycles still marked running, newest first (all but one belong to dead runs)."""
        return self._cycles("status = ?", [CycleStatus.running.value], order_by="started_at desc")

    def update_cycle(self, cycle_id: str, **fields: Any) -> None:
        """Set columns of a cycle; lists (``planned``, ``claimed``) are stored as JSON."""
        self.db.table("cycles").update(cycle_id, {k: codec.plain(v) for k, v in fields.items()})

    def finish_cycle(self, summary: CycleSummary) -> None:
        """Close the summary's cycle with its status, message and the cost its sessions recorded."""
        self.update_cycle(
            summary.cycle_id, status=summary.status, finished_at=utcnow(),
            summary=summary.model_dump(mode="json"), message=summary.message,
            cost_usd=round(self.cycle_cost(summary.cycle_id), 6),
        )
        self._update_state(last_cycle_id=summary.cycle_id, last_cycle_at=utcnow())

    def slot_wait_began(self, cycle_id: str) -> None:
        """A session of ``cycle_id`` waits for a slot of the portfolio's agent cap."""
        with self.transaction():
            self.db.execute("UPDATE cycles SET slot_waiting = slot_waiting + 1, "
                            "slot_waits = slot_waits + 1 WHERE id = ?", [cycle_id])

    def slot_wait_ended(self, cycle_id: str, waited_s: float) -> None:
        """That session got its slot after ``waited_s`` (or gave up waiting)."""
        with self.transaction():
            self.db.execute("UPDATE cycles SET slot_waiting = max(slot_waiting - 1, 0), "
                            "slot_wait_s = slot_wait_s + ? WHERE id = ?", [round(waited_s, 3), cycle_id])

    def list_cycles(self, limit: int = 20) -> list[Cycle]:
        """The ``limit`` newest cycles, newest first."""
        return self._cycles(None, [], order_by="started_at desc", limit=limit)

    def find_cycles(self, prefix: str, limit: int = 2) -> list[Cycle]:
        """Cycles whose id starts with ``prefix`` (exactly: ``_`` and ``%`` are not wildcards)."""
        return self._cycles("substr(id, 1, length(?)) = ?", [prefix, prefix], order_by="id", limit=limit)

    def cycles_finished_between(self, after: str, before: str) -> list[Cycle]:
        """Cycles that ended after ``after`` and before ``before`` (ISO times), oldest first."""
        return self._cycles("finished_at > ? AND finished_at < ?", [after, before], order_by="finished_at")

    def _cycles(self, where: str | None, args: list[Any], order_by: str, limit: int | None = None) -> list[Cycle]:
        rows = self.db.table("cycles").rows_where(where, args, order_by=order_by, limit=limit)
        return [codec.cycle_from(r) for r in rows]
