"""One ``project-cycle`` deployment per enabled project of a portfolio.

Each is named after its project, runs on an interval of the project's
``cycle_interval_minutes`` and carries the project and the portfolio file as
parameters, so a run from the UI or ``prefect deployment run
'project-cycle/<project>'`` is the same cycle ``orch run`` starts.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.project_cycle import project_cycle
from orchestrator.adapters.portfolio_file import find_config, load_portfolio


def project_deployments(
    config: str | Path | None = None, paused: set[str] | frozenset[str] = frozenset()
) -> list[RunnerDeployment]:
    """The deployments of every enabled project, highest priority first.

    Projects named in ``paused`` get their schedule registered paused; the
    others active (so a schedule paused by an earlier shutdown comes back).
    """
    path = find_config(config).resolve()
    portfolio = load_portfolio(path)
    # to_deployment dispatches on context; called from sync code it returns the object.
    return [
        cast(RunnerDeployment, project_cycle.to_deployment(
            name=project.name,
            interval=timedelta(minutes=project.cycle_interval_minutes),
            parameters={"project": project.name, "config": str(path)},
            tags=[f"project:{project.name}"],
            paused=project.name in paused,
            concurrency_limit=1,  # two cycles of one project never overlap
            # A module path loads from the installed package, whatever the worker's directory.
            entrypoint_type=EntrypointType.MODULE_PATH,
            description=f"Cycles of {project.name} ({project.path})",
        ))
        for project in portfolio.enabled_projects()
    ]
