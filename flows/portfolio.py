"""The ``portfolio`` flow: one cycle of every enabled project, all at once.

Cycles start highest priority first and run concurrently as subflows; the
portfolio's agent limit (``max_total_workers``), when it sets one, is what
keeps them from starting more agent sessions than the machine or the budget
allows. One project's failed cycle does not stop the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.exceptions import PrefectHTTPStatusError

from flows.project_cycle import artifact_key, project_cycle
from orchestrator.adapters.portfolio_file import find_config, load_portfolio
from orchestrator.domain.models import CycleStatus, CycleSummary
from tasks.slots import set_agent_limit

T = TypeVar("T")


BUSY_WAITS_S = (5.0, 20.0)
"""Waits before a project's cycle is asked again after the server answered 503.

A SQLite server under many projects at once can stay "database is locked"
past the client's own retries (seen at 16 projects on 2 cores, when a
subflow's run was created). A cycle asked again resumes from its finished
steps, so that costs no agent work twice.
"""


async def again_while_busy(cycle: Callable[[], Awaitable[T]], project: str, warn: Callable[[str], None],
                           waits_s: tuple[float, ...] = BUSY_WAITS_S) -> T:
    """``cycle()``, asked again after each of ``waits_s`` while the server answers 503 (each ``warn``-ed)."""
    for wait_s in (*waits_s, None):
        try:
            return await cycle()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503 or wait_s is None:
                raise
            warn(f"The Prefect server was busy (503) for the cycle of {project}: asked again in {wait_s:g} s")
            await asyncio.sleep(wait_s)
    raise AssertionError("unreachable")  # the last wait is None: it returned or raised


@flow(name="portfolio", log_prints=True)
async def portfolio(config: str | None = None) -> list[CycleSummary]:
    """Run one cycle of each enabled project of the portfolio file ``config``."""
    path = str(find_config(config).resolve())
    the_portfolio = load_portfolio(path)
    logger = get_run_logger()
    if note := await set_agent_limit(the_portfolio):
        logger.warning(note)
    projects = the_portfolio.enabled_projects()
    cap = the_portfolio.max_total_workers
    logger.info("Cycling %d projects with %s: %s", len(projects),
                f"at most {cap} agents at once" if cap else "no portfolio-wide agent cap",
                ", ".join(p.name for p in projects))
    outcomes = await asyncio.gather(
        *[again_while_busy(partial(project_cycle, project=p.name, config=path), p.name, logger.warning) for p in projects],
        return_exceptions=True,
    )
    summaries = [
        o if isinstance(o, CycleSummary) else CycleSummary(
            project=p.name, cycle_id="", status=CycleStatus.failed, message=f"{type(o).__name__}: {o}")
        for p, o in zip(projects, outcomes, strict=True)
    ]
    await acreate_table_artifact(
        key=artifact_key("portfolio", the_portfolio.name), description="One cycle of each project",
        table=[{"project": s.project, "cycle": s.cycle_id or "-", "status": s.status,
                "merged": len(s.merged), "rejected": len(s.rejected),
                "cost ($)": f"{s.total_cost_usd:.4f}", "note": s.message or "-"} for s in summaries],
    )
    failed = [s.project for s in summaries if s.status is CycleStatus.failed]
    if failed:
        logger.warning("Cycles failed: %s", ", ".join(failed))
    return summaries
