"""The Prefect side of the approval gate (the decisions live in ``orchestrator.stages.approval``).

A run of a deployment suspends (``suspend_flow_run`` with a typed input), so
nothing runs and nothing is paid while it waits: a person resumes it from
the Prefect UI's form, or ``orch approve``/``orch reject`` records the
decision and resumes it. Suspension lives in the server's database, so it
outlives restarts of the server and of ``orch start``. A one-off run of the
deployment is scheduled at the deadline: if nobody decided by then, it takes
the cycle over and applies ``approval_default``, and the suspended run is
cancelled.

A run without a deployment (``orch run``) cannot suspend; it stops the
cycle where it is, and the next ``orch run`` continues it once decided.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.objects import State, StateType
from prefect.flow_runs import asuspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Cancelled, Scheduled
from pydantic import Field

from orchestrator.adapters.webhooks import Event
from orchestrator.domain.models import ApprovalStage, ApprovalStatus
from orchestrator.domain.state import Approval
from orchestrator.stages import approval
from orchestrator.stages.context import ProjectContext
from tasks.runs import force_state

from .notices import notify


class ApprovalInput(RunInput):
    """What the Prefect UI asks whoever resumes a cycle waiting for approval."""

    approve: bool = Field(description="Check to approve; leave unchecked to reject.")
    reason: str = Field(default="", description="Why. A rejection's reason is given to the next attempt.")


async def ask_approval(ctx: ProjectContext, cycle_id: str, stage: ApprovalStage, what: str) -> approval.Decision | None:
    """The decision on ``stage`` of the cycle; None when the cycle must stop and wait.

    ``what`` is the markdown shown to the approver (the plan, or the branches to merge).
    """
    run_id = str(flow_run.get_id() or "")
    deployment_id = _deployment_id()
    asked, new = approval.request(ctx, cycle_id, stage, run_id)
    if asked.flow_run_id != run_id or asked.status is not ApprovalStatus.waiting:
        # Decided (by orch approve, say), or a later run carries the cycle past the deadline.
        decision = approval.decided(ctx, cycle_id, stage, apply_timeout=True)
        if decision is not None:
            await _cancel_suspended(asked.flow_run_id, run_id)
            return decision
    if new:
        await _announce(ctx, asked, what)
        if deployment_id:
            await _schedule_deadline_run(deployment_id, asked)
    if not deployment_id:
        return approval.decided(ctx, cycle_id, stage, apply_timeout=True)
    get_run_logger().info("Waiting: %s", approval.describe(asked))
    # Returns at once with the input when this run was resumed with one; otherwise it ends the process here.
    answer = await asuspend_flow_run(wait_for_input=ApprovalInput, key=f"approval-{stage}-{cycle_id}")
    approval.decide(ctx.store, cycle_id, stage, answer.approve, answer.reason, "Prefect UI")
    return approval.decided(ctx, cycle_id, stage, apply_timeout=True)


def _deployment_id() -> str:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return str(run.deployment_id) if run is not None and run.deployment_id else ""


async def _announce(ctx: ProjectContext, asked: Approval, what: str) -> None:
    line = approval.describe(asked)
    stage, cycle_id = asked.stage, asked.cycle_id
    await acreate_markdown_artifact(
        key=f"approval-{stage}-{cycle_id}"[:60].lower(),
        markdown=f"# Approval needed: the {stage} of cycle {cycle_id}\n\n{line}\n\n"
                 "In the Prefect UI: **Resume** this run, check *approve* or not, give a reason.\n\n"
                 f"{what}\n",
        description=f"Waiting for approval of the {stage} of cycle {cycle_id}",
    )
    await notify(ctx, Event.approval_needed, f"Cycle {cycle_id} waits for approval of its {stage}",
                 {"cycle": cycle_id, "deadline (UTC)": asked.deadline, "then": asked.default,
                  "approve": f"orch approve {cycle_id}"},
                 link=_ui_link())


def _ui_link() -> str:
    """The run's page in the Prefect UI ('' when no UI address is known, as with a temporary server)."""
    url = flow_run.get_flow_run_ui_url() or ""
    return url if url.startswith("http") else ""


async def _schedule_deadline_run(deployment_id: str, asked: Approval) -> None:
    """A run at the deadline that applies the default if nobody decided."""
    parameters = dict(flow_run.get_parameters())
    parameters["cycle_id"] = asked.cycle_id
    async with get_client() as client:
        await client.create_flow_run_from_deployment(
            UUID(deployment_id), parameters=parameters,
            # Just after it, so the deadline has passed by the time the run looks.
            state=Scheduled(scheduled_time=datetime.fromisoformat(asked.deadline) + timedelta(seconds=2)),
            idempotency_key=f"approval-deadline-{asked.cycle_id}-{asked.stage}",
        )


async def _cancel_suspended(old_run_id: str, current: str) -> None:
    """The waiting run will never resume usefully: this run decided its cycle."""
    if old_run_id and old_run_id != current:
        cancelled: State[None] = Cancelled(message=f"the approval was decided while it waited; run {current} went on")
        await force_state(old_run_id, cancelled, lambda run: run.state is not None and run.state.type is StateType.PAUSED)
