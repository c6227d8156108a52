"""The merge step: into main here, or (``merge_strategy: "pr"``) as pull requests."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from orchestrator.domain.models import MergeOutcome, Task, WorkResult
from orchestrator.stages import pulls, refinery
from orchestrator.stages.context import ProjectContext, ProjectRef, in_thread
from tasks.slots import services


def merge_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    # Main's head and the exact branch commits are the inputs of a merge. The step's name
    # leads: merge and publish take the same inputs, and must never reuse each other's result.
    commits = ",".join(f"{w.task_id}:{w.commit}" for _, w in p["candidates"])
    digest = hashlib.sha256(commits.encode()).hexdigest()[:16]
    return f"{context.task.name}-{p['ref'].project}-{p['cycle_id']}-{p['main_head']}-{digest}"


@task(name="merge", cache_key_fn=merge_key, persist_result=True, task_run_name="merge: {ref.project}")
async def merge(
    ref: ProjectRef, cycle_id: str, main_head: str, candidates: list[tuple[Task, WorkResult]]
) -> MergeOutcome:
    """Merge the passing branches into main through a tested integration."""
    with ProjectContext.open(ref, services()) as ctx:
        return await refinery.merge(ctx, cycle_id, candidates)


@task(name="publish", cache_key_fn=merge_key, persist_result=True, task_run_name="pull requests: {ref.project}")
async def publish(
    ref: ProjectRef, cycle_id: str, main_head: str, candidates: list[tuple[Task, WorkResult]]
) -> MergeOutcome:
    """Push the passing branches and open their pull requests."""
    return await in_thread(ref, pulls.publish, cycle_id, candidates)
