"""Prefect API calls the tasks, the flows and the deployments share (no task here).

A project's deployment is ``project-cycle/<project>``; a flow run seen in the
store may belong to another Prefect server, so a run or deployment that is
not found here is left alone rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import ObjectNotFound

FLOW_NAME = "project-cycle"


async def set_schedule_paused(project: str, paused: bool) -> bool:
    """Pause or resume ``project-cycle/<project>``'s schedule; False if it is not deployed here."""
    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(f"{FLOW_NAME}/{project}")
        except ObjectNotFound:
            return False
        if paused:
            await client.pause_deployment(deployment.id)
        else:
            await client.resume_deployment(deployment.id)
        return True


async def force_state(run_id: str, state: State, when: Callable[[FlowRun], bool]) -> bool:
    """Put flow run ``run_id`` in ``state`` if it exists here and ``when`` holds for it.

    Forced: the run's own process is gone (or waits forever), so no
    orchestration rule would let the change through.
    """
    async with get_client() as client:
        try:
            run = await client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            return False
        if not when(run):
            return False
        await client.set_flow_run_state(run.id, state, force=True)
        return True


async def old_runs(project: str, before: datetime) -> list[FlowRun]:
    """``project``'s cycle runs that ended before ``before`` (a waiting or running one has not ended);
    200 at most, the next call finds the rest."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    ended = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    runs = FlowRunFilter(name=FlowRunFilterName(any_=[project]), end_time=FlowRunFilterEndTime.model_validate({"before_": before}),
                         state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ended)))
    async with get_client() as client:
        return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                                           flow_run_filter=runs, limit=200)  # the most the API gives at once


async def delete_runs(runs: list[FlowRun]) -> None:
    """Delete flow runs and the artifacts they made (their task runs and logs go with them)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        for run in runs:
            made = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            for artifact in await client.read_artifacts(artifact_filter=made):
                with suppress(ObjectNotFound):
                    await client.delete_artifact(artifact.id)
            with suppress(ObjectNotFound):
                await client.delete_flow_run(run.id)
