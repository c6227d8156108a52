"""What the CLI asks of a running Prefect server: schedules, next runs, registration.

Every function takes the server's API URL explicitly (from
:mod:`deployments.server`) and talks to it under temporary settings, so the
calling process's own Prefect settings are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import anyio
import httpx
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.from_portfolio import project_deployments
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.errors import OrchestratorError
from tasks import runs, slots
from tasks.runs import FLOW_NAME


@contextmanager
def api(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at ``api_url`` for the block.

    A server that answers its health check but then fails a request becomes
    one OrchestratorError naming the server.
    """
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        try:
            yield
        except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
            raise OrchestratorError(f"the Prefect server at {api_url} failed a request: {exc}") from exc


def next_runs(api_url: str, projects: list[str]) -> dict[str, datetime]:
    """Project -> time of its deployment's next scheduled cycle (projects with none are left out)."""

    async def read() -> dict[str, datetime]:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=projects)),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            names = {d.id: d.name for d in await client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=projects)))
                if d.name in projects}
        found: dict[str, datetime] = {}
        for run in runs:
            name = names.get(run.deployment_id) if run.deployment_id else None
            if name and run.expected_start_time and name not in found:
                found[name] = run.expected_start_time
        return found

    with api(api_url):
        return anyio.run(read)


def set_schedule_paused(api_url: str, project: str, paused: bool) -> bool:
    """Pause or resume ``project-cycle/<project>``'s schedule; False if it is not deployed there."""
    with api(api_url):
        return anyio.run(runs.set_schedule_paused, project, paused)


def resume_waiting(api_url: str, flow_run_id: str, approve: bool, reason: str) -> bool:
    """Resume a flow run suspended at an approval gate with the decision; False if it is not suspended."""
    from uuid import UUID

    from prefect.flow_runs import aresume_flow_run

    async def apply() -> bool:
        async with get_client() as client:
            try:
                run = await client.read_flow_run(UUID(flow_run_id))
            except ObjectNotFound:  # recorded by another Prefect server
                return False
        if run.state is None or not run.state.is_paused():
            return False
        await aresume_flow_run(run.id, run_input={"approve": approve, "reason": reason})
        return True

    with api(api_url):
        return anyio.run(apply)


def set_agent_limit(api_url: str, portfolio: PortfolioConfig) -> str:
    """Create or resize the portfolio's agent limit, if it sets one; a warning when hosts disagree."""
    with api(api_url):
        return anyio.run(slots.set_agent_limit, portfolio)


def register(api_url: str, portfolio: PortfolioConfig, work_pool: str) -> list[str]:
    """Create the work pool (process type) if missing, and every project's deployment.

    A paused project's deployment is registered paused. Its runs send
    heartbeats, and the server gets the automation that crashes a run whose
    heartbeats stop (see :mod:`deployments.liveness`). Returns the names of
    the deployments, ``project-cycle/<project>``.
    """
    from prefect.workers.process import ProcessWorker

    from deployments import liveness

    # Built outside the event loop: to_deployment returns a coroutine inside one.
    deployments = project_deployments(_source(portfolio), paused=_paused_projects(portfolio))

    async def apply() -> list[str]:
        async with get_client() as client:
            try:
                await client.read_work_pool(work_pool)
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(
                    name=work_pool, type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                ))
        await liveness.ensure_automation()
        names = []
        for deployment in deployments:
            env = {**deployment.job_variables.get("env", {}), **liveness.heartbeat_env()}
            deployment.job_variables = {**deployment.job_variables, "env": env}
            await deployment.aapply(work_pool_name=work_pool)
            names.append(f"{FLOW_NAME}/{deployment.name}")
        return names

    with api(api_url):
        return anyio.run(apply)


def serve(api_url: str, portfolio: PortfolioConfig, ctrl_c: bool = True) -> None:
    """Serve every enabled project's deployment in this process until SIGTERM or Ctrl+C.

    Schedules of paused projects are registered paused. The stop (see
    :mod:`deployments.serving`) pauses the served schedules; the next ``serve``
    sets them from the store's flags again. ``ctrl_c=False`` leaves SIGINT alone.
    """
    from deployments import serving

    deployments = project_deployments(_source(portfolio), paused=_paused_projects(portfolio))
    with api(api_url):
        anyio.run(serving.serve, deployments, ctrl_c)


def _paused_projects(portfolio: PortfolioConfig) -> set[str]:
    from orchestrator.adapters.store import is_paused

    return {p.name for p in portfolio.enabled_projects() if is_paused(portfolio.data_dir, p.name)}


def _source(portfolio: PortfolioConfig) -> Path:
    if portfolio.source is None:
        raise OrchestratorError("the portfolio must be read from a file to be deployed")
    return portfolio.source
