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
from typing import TYPE_CHECKING

from orchestrator.adapters.store import Store
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import ApprovalStage, ApprovalStatus, TaskStatus
from orchestrator.domain.state import Approval

if TYPE_CHECKING:  # the read commands import this module; the agent runtime stays out of them
    from orchestrator.stages.context import ProjectContext

@dataclass(frozen=True)
class Decision:
    """How an approval request was decided."""

    approved: bool
    reason: str
    decided_by: str  # "orch approve", "Prefect UI", "timeout", ...

    @property
    def timed_out(self) -> bool:
        return self.decided_by == "timeout"


def _decision(asked: Approval) -> Decision:
    return Decision(approved=asked.status is ApprovalStatus.approved, reason=asked.reason,
                    decided_by=asked.decided_by)


def _outcome(approve: bool) -> ApprovalStatus:
    return ApprovalStatus.approved if approve else ApprovalStatus.rejected


def past_deadline(asked: Approval, now: datetime | None = None) -> bool:
    """Whether a waiting request's time is up."""
    return (now or datetime.now(UTC)) >= datetime.fromisoformat(asked.deadline)


def request(ctx: ProjectContext, cycle_id: str, stage: ApprovalStage, flow_run_id: str) -> tuple[Approval, bool]:
    """The cycle's request for ``stage`` (made now if new); and whether it is new."""
    existing = ctx.store.approval(cycle_id, stage)
    if existing is not None:
        return existing, False
    deadline = datetime.now(UTC) + timedelta(minutes=ctx.config.approval_timeout_minutes)
    made = ctx.store.request_approval(cycle_id, stage, deadline.isoformat(),
                                      ctx.config.approval_default, flow_run_id)
    return made, True


def decided(ctx: ProjectContext, cycle_id: str, stage: ApprovalStage, *, apply_timeout: bool) -> Decision | None:
    """The decision on ``stage`` if there is one; with ``apply_timeout``, a time-out decides it."""
    found = ctx.store.approval(cycle_id, stage)
    if found is None:
        return None
    if found.status is ApprovalStatus.waiting:
        if not (apply_timeout and past_deadline(found)):
            return None
        default = found.default
        minutes = ctx.config.approval_timeout_minutes
        ctx.store.decide_approval(cycle_id, stage, _outcome(default == "approve"),
                                  f"nobody decided within {minutes} minute(s); approval_default is {default!r}",
                                  "timeout")
        found = ctx.store.approval(cycle_id, stage) or found
    return _decision(found)


def decide(store: Store, cycle_id: str, stage: ApprovalStage, approve: bool, reason: str, by: str) -> bool:
    """Record a person's decision; False if the request was decided already."""
    return store.decide_approval(cycle_id, stage, _outcome(approve), reason, by)


def waiting_for(store: Store, cycle_prefix: str) -> Approval:
    """The waiting request of the cycle whose id starts with ``cycle_prefix``; StoreError if none."""
    cycle_id = store.get_cycle(cycle_prefix).id
    waiting = [r for r in store.waiting_approvals() if r.cycle_id == cycle_id]
    if not waiting:
        raise StoreError(f"cycle {cycle_id} of {store.project!r} is not waiting for approval: see `orch status`")
    return waiting[0]


def blocking(ctx: ProjectContext, flow_run_id: str) -> Approval | None:
    """A request that keeps another run from working on the project now.

    A cycle waiting for approval holds the project: a later run does nothing
    until it is decided or its time is up, unless it is the waiting run itself
    coming back (resumed from the Prefect UI).
    """
    for waiting in ctx.store.waiting_approvals():
        if waiting.flow_run_id != flow_run_id and not past_deadline(waiting):
            return waiting
    return None


def asks(ctx: ProjectContext, stage: ApprovalStage, passing: int = 0) -> bool:
    """Whether the cycle stops at ``stage`` for a person: only when ``require_approval`` names it
    and there is something to decide (pending tasks to work on; ``passing`` branches to merge)."""
    if ctx.config.require_approval != stage:
        return False
    if stage is ApprovalStage.plan:
        return ctx.store.count_by_status()[TaskStatus.pending.value] > 0
    return passing > 0


def reject_plan(ctx: ProjectContext, cycle_id: str, decision: Decision) -> None:
    """The plan was turned down: its new tasks fail with the reason, so it is not planned again as is."""
    why = f"plan rejected ({decision.decided_by}): {decision.reason or 'no reason given'}"
    for task in ctx.store.tasks_of(ctx.store.get_cycle(cycle_id).planned):
        if task.status is TaskStatus.pending:
            ctx.store.update_task(task.id, status=TaskStatus.failed, last_failure=why)


def reject_merge(ctx: ProjectContext, task_ids: list[str], decision: Decision) -> None:
    """The merge was turned down: each branch goes back with the reason for its next attempt."""
    why = f"merge rejected ({decision.decided_by}): {decision.reason or 'no reason given'}"
    for task in ctx.store.tasks_of(task_ids):
        if task.status is TaskStatus.in_progress:
            ctx.send_back(task, why)


def describe(asked: Approval) -> str:
    """One line for people: what waits, until when, and what then happens."""
    deadline = asked.deadline[:16].replace("T", " ")
    cycle_id = asked.cycle_id
    return (f"cycle {cycle_id} waits for approval of its {asked.stage} until {deadline} UTC "
            f"(then: {asked.default}); `orch approve {cycle_id}` or `orch reject {cycle_id} --reason ...`")

