"""The work step."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from orchestrator.domain.models import Task, WorkResult
from orchestrator.stages import worker
from orchestrator.stages.context import ProjectContext, ProjectRef
from tasks.slots import services


def work_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    # The attempt is part of the identity: a retried task is new, paid work.
    t = p["task"]
    return f"work-{p['ref'].project}-{p['cycle_id']}-{t.id}-{t.attempts}-{p['base_commit']}"


@task(name="work", cache_key_fn=work_key, persist_result=True, task_run_name="work: {task.title}")
async def work(ref: ProjectRef, cycle_id: str, base_commit: str, task: Task) -> WorkResult:
    """Run one worker on its own branch and commit its change."""
    with ProjectContext.open(ref, services()) as ctx:
        return await worker.work(ctx, cycle_id, base_commit, task)
