"""The portfolio-wide cap on agent sessions: a Prefect global concurrency limit.

Every agent session (planner, worker, reviewer, resolver) holds one slot of
the portfolio's limit while it runs, so ``max_total_workers`` bounds the
sessions of all projects' cycles together, wherever they run.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from prefect import get_client
from prefect.concurrency.asyncio import concurrency

from orchestrator import agent
from orchestrator.config import PortfolioConfig


async def gate_agents(portfolio: PortfolioConfig) -> None:
    """Create or resize the portfolio's limit and make every session take a slot.

    Prefect skips a missing limit with only a warning, so the limit is made
    here, before any session asks for a slot, and sessions ask strictly.
    """
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(
            portfolio.agent_pool, portfolio.max_total_workers
        )
    agent.use_gate(agent_slot)


def agent_slot(pool: str) -> AbstractAsyncContextManager[object]:
    """One slot of ``pool`` for the length of a session; fails if the limit is missing."""
    return concurrency(pool, occupy=1, strict=True)

