"""The judge steps: the base's checks once per cycle, then one verdict per branch."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from orchestrator.domain.models import Baseline, Task, Verdict, WorkResult
from orchestrator.stages import judge as core
from orchestrator.stages.context import ProjectContext, ProjectRef, in_thread
from tasks.slots import services


def baseline_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    return f"baseline-{p['ref'].project}-{p['cycle_id']}-{p['base_commit']}"


def judge_key(context: TaskRunContext, p: dict[str, Any]) -> str:
    # The branch's commit is the input: a new commit needs a new verdict.
    w = p["work"]
    return f"judge-{p['ref'].project}-{w.cycle_id}-{w.task_id}-{w.attempt}-{w.commit}"


@task(name="baseline", cache_key_fn=baseline_key, persist_result=True, task_run_name="baseline: {ref.project}")
async def baseline(ref: ProjectRef, cycle_id: str, base_commit: str, batch: bool = False) -> Baseline:
    """Run the tests (unless the merge tests a ``batch``) and lint on the cycle's base commit."""
    # The store is used in the thread that opened it, so the context opens there.
    return await in_thread(ref, core.baseline, cycle_id, base_commit, batch)


@task(name="judge", cache_key_fn=judge_key, persist_result=True, task_run_name="judge: {task.title}")
async def judge(ref: ProjectRef, task: Task, work: WorkResult, base: Baseline) -> Verdict:
    """Gate and review one branch."""
    with ProjectContext.open(ref, services()) as ctx:
        return await core.judge(ctx, task, work, base)
