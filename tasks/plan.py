"""The plan step."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from orchestrator.domain.models import Plan
from orchestrator.stages import planner
from orchestrator.stages.context import ProjectContext, ProjectRef
from tasks.slots import services


def plan_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    # One planning per cycle and base commit.
    return f"plan-{p['ref'].project}-{p['cycle_id']}-{p['base_commit']}"


@task(name="plan", cache_key_fn=plan_key, persist_result=True, task_run_name="plan: {ref.project}")
async def plan(ref: ProjectRef, cycle_id: str, base_commit: str) -> Plan:
    """Ask the planner for tasks when there is room for them."""
    with ProjectContext.open(ref, services()) as ctx:
        return await planner.plan(ctx, cycle_id, base_commit)
