"""The approval gate (``require_approval``): a person says yes or no, or time decides.

A cycle that reaches its gate (``plan``: before workers start; ``merge``:
before passing branches merge or become pull requests) records a request in
the project's store with a deadline. The store is where every decision
lands, whoever makes it: ``orch approve``/``orch reject``, the Prefect UI
(the flow run's suspend input, recorded when the run resumes), or the
deadline, after which ``approval_default`` applies. The first decision
stands. The Prefect side (suspending the run, waking it) is in
``flows/approval_gate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .models import TaskStatus
from .store import Store

if TYPE_CHECKING:  # the read commands import this module; the agent runtime stays out of them
    from .context import ProjectContext

STAGES = ("plan", "merge")


@dataclass(frozen=True)
class Decision:
    """How an approval request was decided."""

    approved: bool
    reason: str
    decided_by: str  # "orch approve", "Prefect UI", "timeout", ...

    @property
    def timed_out(self) -> bool:
        return self.decided_by == "timeout"


def _decision(row: dict[str, Any]) -> Decision:
    return Decision(approved=row["status"] == "approved", reason=row["reason"] or "",
                    decided_by=row["decided_by"] or "")


def past_deadline(row: dict[str, Any], now: datetime | None = None) -> bool:
    """Whether a waiting request's time is up."""
    return (now or datetime.now(UTC)) >= datetime.fromisoformat(row["deadline"])


def request(ctx: ProjectContext, cycle_id: str, stage: str, flow_run_id: str) -> tuple[dict[str, Any], bool]:
    """The cycle's request for ``stage`` (made now if new); and whether it is new."""
    existing = ctx.store.approval(cycle_id, stage)
    if existing is not None:
        return existing, False
    deadline = datetime.now(UTC) + timedelta(minutes=ctx.config.approval_timeout_minutes)
    row = ctx.store.request_approval(cycle_id, stage, deadline.isoformat(),
                                     ctx.config.approval_default, flow_run_id)
    return row, True


def decided(ctx: ProjectContext, cycle_id: str, stage: str, *, apply_timeout: bool) -> Decision | None:
    """The decision on ``stage`` if there is one; with ``apply_timeout``, a time-out decides it."""
    row = ctx.store.approval(cycle_id, stage)
    if row is None:
        return None
    if row["status"] == "waiting":
        if not (apply_timeout and past_deadline(row)):
            return None
        default = row["default"]
        minutes = ctx.config.approval_timeout_minutes
        ctx.store.decide_approval(cycle_id, stage, "approved" if default == "approve" else "rejected",
                                  f"nobody decided within {minutes} minute(s); approval_default is {default!r}",
                                  "timeout")
        row = ctx.store.approval(cycle_id, stage) or row
    return _decision(row)


def decide(store: Store, cycle_id: str, stage: str, approve: bool, reason: str, by: str) -> bool:
    """Record a person's decision; False if the request was decided already."""
    return store.decide_approval(cycle_id, stage, "approved" if approve else "rejected", reason, by)


def waiting_for(store: Store, cycle_prefix: str) -> dict[str, Any]:
    """The waiting request of the cycle whose id starts with ``cycle_prefix``; StoreError if none."""
    row = store.get_cycle(cycle_prefix)
    waiting = [r for r in store.waiting_approvals() if r["cycle_id"] == row["id"]]
    if not waiting:
        raise StoreError(f"cycle {row['id']} of {store.project!r} is not waiting for approval: see `orch status`")
    return waiting[0]


def blocking(ctx: ProjectContext, flow_run_id: str) -> dict[str, Any] | None:
    """A request that keeps another run from working on the project now.

    A cycle waiting for approval holds the project: a later run does nothing
    until it is decided or its time is up, unless it is the waiting run itself
    coming back (resumed from the Prefect UI).
    """
    for row in ctx.store.waiting_approvals():
        if row["flow_run_id"] != flow_run_id and not past_deadline(row):
            return row
    return None


def reject_plan(ctx: ProjectContext, cycle_id: str, decision: Decision) -> None:
    """The plan was turned down: its new tasks fail with the reason, so it is not planned again as is."""
    from .cycle import planned_tasks

    why = f"plan rejected ({decision.decided_by}): {decision.reason or 'no reason given'}"
    for task in planned_tasks(ctx, cycle_id):
        if task.status is TaskStatus.pending:
            ctx.store.update_task(task.id, status=TaskStatus.failed, last_failure=why)


def reject_merge(ctx: ProjectContext, task_ids: list[str], decision: Decision) -> None:
    """The merge was turned down: each branch goes back with the reason for its next attempt."""
    from .cycle import send_back

    why = f"merge rejected ({decision.decided_by}): {decision.reason or 'no reason given'}"
    for task in ctx.store.tasks_of(task_ids):
        if task.status is TaskStatus.in_progress:
            send_back(ctx, task, why)


def describe(row: dict[str, Any]) -> str:
    """One line for people: what waits, until when, and what then happens."""
    deadline = row["deadline"][:16].replace("T", " ")
    return (f"cycle {row['cycle_id']} waits for approval of its {row['stage']} until {deadline} UTC "
            f"(then: {row['default']}); `orch approve {row['cycle_id']}` or `orch reject {row['cycle_id']} --reason ...`")

