"""The patrol step, and the two things it asks of Prefect itself."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Crashed

from orchestrator.domain.models import PullSync
from orchestrator.stages import backlog, pulls, retention
from orchestrator.stages import patrol as core
from orchestrator.stages.context import ProjectContext, ProjectRef, in_thread
from tasks.runs import delete_runs, force_state, old_runs, set_schedule_paused


# Never cached: it looks at the project as it is now, every cycle.
@task(name="patrol", cache_policy=NO_CACHE, persist_result=False, task_run_name="patrol: {ref.project}")
async def patrol(ref: ProjectRef) -> core.PatrolReport:
    """Tidy up after dead runs; pause the project and its schedule if it keeps failing."""
    report = await in_thread(ref, core.patrol)  # git, files, and a look at every process: off the event loop
    with ProjectContext.open(ref) as ctx:
        await mark_crashed(report.dead_flow_runs)
        if (before := retention.cutoff(ctx, ctx.services.clock())) is not None:
            await delete_runs(await old_runs(ref.project, before))
        # Patrol may fail tasks for good (a dead run's last attempt): check the streak here too.
        return report.model_copy(update={"paused_reason": await stop_if_failing(ctx)})


@task(name="sync", cache_policy=NO_CACHE, persist_result=False, task_run_name="sync: {ref.project}")
async def sync(ref: ProjectRef) -> PullSync:
    """Learn what happened elsewhere: pull requests merged, closed or failing CI; issues still to close."""
    found = await in_thread(ref, pulls.sync)
    await in_thread(ref, backlog.sync_done)
    return found


async def stop_if_failing(ctx: ProjectContext) -> str:
    """After ``max_consecutive_failures`` failed tasks in a row, pause the project and its schedule.

    Returns the reason, or '' when the project goes on.
    """
    reason = core.pause_if_failing(ctx)
    if reason:
        await pause_schedule(ctx.name)
    return reason


async def mark_crashed(run_ids: list[str]) -> None:
    """Mark flow runs whose process died (and that Prefect still shows running) as crashed."""
    current = str(flow_run.get_id() or "")
    crashed: State[None] = Crashed(message="its process died; a later cycle took over")
    for run_id in run_ids:
        if run_id != current:
            await force_state(run_id, crashed, lambda run: run.state is not None and not run.state.is_final())


async def pause_schedule(project: str) -> bool:
    """Pause ``project-cycle/<project>``'s schedule if it is deployed here."""
    return await set_schedule_paused(project, paused=True)
