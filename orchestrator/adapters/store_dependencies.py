"""The store's task graph: tasks that wait for others (``depends_on``), and blocked ones.

A task is claimed only when every task it depends on is done (merged; in pr
mode, its pull request merged): :data:`READY` is the condition the claim's
single UPDATE adds. A task that fails for good blocks its dependents, and
theirs (status ``blocked``); when it is retried, those it blocked are pending
again and wait for it. :class:`.store.Store` holds these methods; they are
apart only to keep each file readable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import sqlite_utils

from orchestrator.adapters import store_rows as codec
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import Task, TaskStatus

READY = """NOT EXISTS (SELECT 1 FROM json_each(t.depends_on) AS d JOIN tasks AS p ON p.id = d.value
                       WHERE p.status != 'done')"""
"""SQL: the task ``t`` has no prerequisite left that is not done. One that retention removed
was done: a failed one would have blocked ``t``, and only pending tasks are claimed."""

_UNDONE = (TaskStatus.failed, TaskStatus.blocked)


class Dependencies:
    """The task-graph part of :class:`.store.Store` (it has the database and the task methods)."""

    db: sqlite_utils.Database
    project: str

    # Store's own, which it puts before these.
    def get_task(self, task_id: str) -> Task:
        raise NotImplementedError

    def update_task(self, task_id: str, **fields: Any) -> Task:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def check_prerequisites(self, task: Task) -> Task:
        """The task as it may be added: each prerequisite must exist; one failed or blocked blocks it."""
        known = {row[0]: TaskStatus(row[1]) for row in self.db.execute(
            "SELECT id, status FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
            [codec.plain(task.depends_on)])}
        for prerequisite in task.depends_on:
            if prerequisite not in known:
                raise StoreError(f"task {task.title!r} depends on unknown task {prerequisite!r} in project "
                                 f"{self.project!r}: see `orch tasks`")
        if task.status is TaskStatus.pending and any(known[p] in _UNDONE for p in task.depends_on):
            return task.model_copy(update={"status": TaskStatus.blocked})
        return task

    def dependents(self, task_id: str) -> list[Task]:
        """Tasks that depend on ``task_id`` directly."""
        rows = self.db.execute(
            "SELECT t.* FROM tasks AS t WHERE EXISTS (SELECT 1 FROM json_each(t.depends_on) WHERE value = ?) "
            "ORDER BY t.priority, t.created_at", [task_id])
        columns = [c[0] for c in rows.description]
        return [codec.task_from(dict(zip(columns, row, strict=True))) for row in rows.fetchall()]

    def blockers(self, task: Task) -> list[Task]:
        """The tasks ``task`` still waits for (not done yet), in its order; a removed one was done."""
        waiting = []
        for prerequisite in task.depends_on:
            row = self.db.execute("SELECT 1 FROM tasks WHERE id = ? AND status != 'done'", [prerequisite]).fetchone()
            if row is not None:
                waiting.append(self.get_task(prerequisite))
        return waiting

    def failed_roots(self, task: Task) -> list[Task]:
        """The failed tasks that block ``task``, through any blocked ones between."""
        roots: list[Task] = []
        seen: set[str] = set()
        frontier = [task]
        while frontier:
            current = frontier.pop(0)
            for prerequisite in self.blockers(current):
                if prerequisite.id in seen:
                    continue
                seen.add(prerequisite.id)
                if prerequisite.status is TaskStatus.failed:
                    roots.append(prerequisite)
                elif prerequisite.status is TaskStatus.blocked:
                    frontier.append(prerequisite)
        return roots

    def block_dependents(self, task_id: str) -> list[str]:
        """``task_id`` failed for good: its pending dependents, and theirs, are blocked. Their ids."""
        blocked: list[str] = []
        with self.transaction():
            for dependent in self._downstream(task_id, TaskStatus.pending):
                self.update_task(dependent.id, status=TaskStatus.blocked)
                blocked.append(dependent.id)
        return blocked

    def unblock_dependents(self, task_id: str) -> list[str]:
        """``task_id`` is pending again: the tasks it blocked wait for it again, unless another
        prerequisite of theirs still failed. Their ids."""
        freed: list[str] = []
        with self.transaction():
            for dependent in self._downstream(task_id, TaskStatus.blocked):
                if not any(p.status in _UNDONE for p in self.blockers(dependent)):
                    self.update_task(dependent.id, status=TaskStatus.pending)
                    freed.append(dependent.id)
        return freed

    def _downstream(self, task_id: str, status: TaskStatus) -> Iterator[Task]:
        """Dependents of ``task_id`` in ``status``, then theirs, each once, nearest first."""
        seen = {task_id}
        frontier = [task_id]
        while frontier:
            following: list[str] = []
            for current in frontier:
                for dependent in self.dependents(current):
                    if dependent.id in seen or dependent.status is not status:
                        continue
                    seen.add(dependent.id)
                    following.append(dependent.id)
                    yield dependent
            frontier = following
