"""The store's approval requests and the project's own state (pause, streaks, parks, budget stop).

:class:`.store.Store` holds these methods; they are apart only to keep each
file readable. Rows turn into models in :mod:`.store_rows`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal

import sqlite_utils

from orchestrator.adapters import store_rows as codec
from orchestrator.adapters.secrets import redact_all
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import ApprovalStage, ApprovalStatus, utcnow
from orchestrator.domain.state import Approval, ProjectState


class ProjectRecords:
    """Approvals and project state, the part of :class:`.store.Store` that is about the project."""

    db: sqlite_utils.Database
    project: str

    def transaction(self) -> AbstractContextManager[None]:  # Store's own, which it puts before this
        raise NotImplementedError

    # -- approvals -------------------------------------------------------------------

    def request_approval(self, cycle_id: str, stage: ApprovalStage, deadline: str,
                         default: Literal["approve", "reject"], flow_run_id: str) -> Approval:
        """Record that ``cycle_id`` waits for approval of ``stage``; the existing request if any."""
        asked = Approval(cycle_id=cycle_id, stage=stage, status=ApprovalStatus.waiting, requested_at=utcnow(),
                         deadline=deadline, default=default, flow_run_id=flow_run_id)
        self.db.table("approvals").insert(codec.approval_row(asked), ignore=True)
        request = self.approval(cycle_id, stage)
        if request is None:  # only if another connection deleted it in between
            raise StoreError(f"the approval request of cycle {cycle_id!r} ({stage}) vanished as it was made")
        return request

    def approval(self, cycle_id: str, stage: ApprovalStage) -> Approval | None:
        """The request of ``cycle_id`` for ``stage``, decided or not; None if it never asked."""
        try:
            return codec.approval_from(self.db.table("approvals").get((cycle_id, stage.value)))
        except sqlite_utils.db.NotFoundError:
            return None

    def waiting_approvals(self) -> list[Approval]:
        """Requests nobody decided yet, oldest first."""
        rows = self.db.table("approvals").rows_where(
            "status = ?", [ApprovalStatus.waiting.value], order_by="requested_at"
        )
        return [codec.approval_from(r) for r in rows]

    def decide_approval(self, cycle_id: str, stage: ApprovalStage, status: ApprovalStatus, reason: str,
                        decided_by: str) -> bool:
        """Decide a waiting request; False when it was decided already (the first decision stands)."""
        with self.db.conn:
            cursor = self.db.execute(
                """UPDATE approvals SET status = ?, reason = ?, decided_by = ?, decided_at = ?
                   WHERE cycle_id = ? AND stage = ? AND status = ?""",
                [status.value, redact_all(reason), decided_by, utcnow(), cycle_id, stage.value,
                 ApprovalStatus.waiting.value],
            )
        return cursor.rowcount == 1

    # -- project state -------------------------------------------------------------

    def state(self) -> ProjectState:
        """The project's pause, failure streak, last cycle and budget stop (defaults if never set)."""
        try:
            return codec.state_from(self.db.table("project_state").get(self.project))
        except sqlite_utils.db.NotFoundError:
            return ProjectState(name=self.project)

    def set_paused(self, paused: bool, reason: str = "") -> None:
        """Pause or resume; resuming also forgives the failure streak that may have paused it."""
        if paused:
            self._update_state(paused=True, paused_reason=reason)
        else:
            self._update_state(paused=False, paused_reason="", consecutive_failures=0)

    def set_budget_stop(self, message: str, resets_at: str | None) -> None:
        """Which cap stopped the work and when it resets ('' clears it)."""
        self._update_state(budget_stop=message, budget_resets_at=resets_at)

    def set_collected_through(self, finished_at: str) -> None:
        """Retention is done with the cycles that finished until ``finished_at``."""
        self._update_state(collected_through=finished_at)

    def set_rate_limit(self, until: str | None, reason: str = "") -> None:
        """Park the project until ``until`` (ISO, UTC) for a rate or usage limit; None lifts it."""
        self._update_state(rate_limited_until=until, rate_limit_reason=reason if until else "")

    def set_flaky_on_main(self, tests: list[str], commit: str) -> None:
        """The tests flaky on main as of ``commit`` (the last cycle's base); [] when none were."""
        self._update_state(flaky_on_main=tests, flaky_on_main_commit=commit)

    def set_planned(self, inputs: str, at: str) -> None:
        """The planner read ``inputs`` (a digest) for the plan it made at ``at``."""
        self._update_state(planned_inputs=inputs, planned_at=at)

    def set_found_work(self, at: str) -> None:
        self._update_state(found_work_at=at)

    def _update_state(self, **fields: Any) -> None:
        with self.transaction():  # read and written as one: no other connection's change is lost
            row = self.state().model_dump() | fields | {"updated_at": utcnow()}
            self.db.table("project_state").upsert(row, pk="name")
