"""The store's ledger of agent sessions: what each cost, by cycle, task, role, model and day.

One row per session in ``agent_costs``, keyed by the session id, so a step
replayed after a crash records the same row again. :class:`.store.Store`
holds these methods; they are apart only to keep each file readable.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlite_utils

from orchestrator.domain.models import utcnow
from orchestrator.domain.state import CostRow


class CostLedger:
    """The cost half of :class:`.store.Store` (it has the database)."""

    db: sqlite_utils.Database

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

    def costs_by_role(self, cycle_id: str | None = None) -> dict[str, float]:
        where, args = ("WHERE cycle_id = ?", [cycle_id]) if cycle_id else ("", [])
        rows = self.db.execute(
            f"SELECT role, sum(cost_usd) FROM agent_costs {where} GROUP BY role", args
        )
        return {role: round(total, 6) for role, total in rows}

    def total_cost(self) -> float:
        return round(sum(self.costs_by_role().values()), 6)

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

    def sessions_of(self, cycle_ids: Iterable[str]) -> list[tuple[str, str, str]]:
        """(cycle id, session id, task id or '') of every recorded session of these cycles."""
        ids = list(cycle_ids)
        marks = ",".join("?" * len(ids))
        return [(r[0], r[1], r[2]) for r in self.db.execute(
            f"SELECT cycle_id, session_id, task_id FROM agent_costs WHERE cycle_id IN ({marks})", ids)] if ids else []

    def cost_breakdown(self, cycle_id: str | None = None) -> list[CostRow]:
        """Cost and session count by role, model and UTC day (``created_at``'s date)."""
        where, args = ("WHERE cycle_id = ?", [cycle_id]) if cycle_id else ("", [])
        rows = self.db.execute(
            f"""SELECT role, model, substr(created_at, 1, 10) AS day, sum(cost_usd), count(*)
                FROM agent_costs {where} GROUP BY role, model, day ORDER BY day, role, model""",
            args,
        )
        return [CostRow(role=role, model=model, day=day, cost_usd=round(total, 6), sessions=n)
                for role, model, day, total, n in rows]
