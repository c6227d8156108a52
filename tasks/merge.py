"""The merge step."""

from __future__ import annotations

import hashlib
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from orchestrator import refinery
from orchestrator.context import ProjectContext, ProjectRef
from orchestrator.models import MergeOutcome, Task, WorkResult


def merge_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    # Main's head and the exact branch commits are the inputs of a merge.
    commits = ",".join(f"{w.task_id}:{w.commit}" for _, w in p["candidates"])
    digest = hashlib.sha256(commits.encode()).hexdigest()[:16]
    return f"merge-{p['ref'].project}-{p['cycle_id']}-{p['main_head']}-{digest}"


@task(name="merge", cache_key_fn=merge_key, persist_result=True, task_run_name="merge: {ref.project}")
async def merge(
    ref: ProjectRef, cycle_id: str, main_head: str, candidates: list[tuple[Task, WorkResult]]
) -> MergeOutcome:
    """Merge the passing branches into main through a tested integration."""
    return await refinery.merge(ProjectContext.open(ref), cycle_id, candidates)
