"""Everything a step needs to act on one project, opened from its name.

Prefect tasks receive a :class:`ProjectRef` (plain, picklable, part of no
cache key) and reopen the context from it, so no live handle crosses a task
boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from orchestrator.adapters.agent import (
    AgentSlots,
    AgentSpec,
    SlotHolder,
    effective_config_dir,
    session_uuid,
)
from orchestrator.adapters.fences import fence_for
from orchestrator.adapters.git_repo import GitRepo
from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.adapters.prompts import load_prompt
from orchestrator.adapters.secret_scan import known_secrets
from orchestrator.adapters.secrets import remember
from orchestrator.adapters.store import Store
from orchestrator.domain.config import PortfolioConfig, ProjectConfig
from orchestrator.domain.models import Role, Task, TaskType
from orchestrator.stages.budget import PROCESS_LEDGER, CycleBudget, SpendLedger, utc_now
from orchestrator.stages.capacity import CycleSlotWatch
from orchestrator.stages.rate_limit import ProjectPark

T = TypeVar("T")


class ProjectRef(BaseModel):
    """Names a project in a portfolio file: what crosses task boundaries."""

    project: str
    config_path: str


@dataclass(frozen=True)
class Services:
    """What the steps of a process share beyond the project, passed in so tests pick their own."""

    slots: AgentSlots | None = None
    """Slots of the portfolio's agent limit (``max_total_workers``); None runs sessions without one."""
    ledger: SpendLedger = PROCESS_LEDGER
    """Sessions in flight against the spend caps (see :mod:`.budget`)."""
    clock: Callable[[], datetime] = utc_now
    """Now, in UTC: when the per-day cap resets."""


@dataclass
class ProjectContext:
    """Config, state and repository of one project, and the services its steps use."""

    ref: ProjectRef
    portfolio: PortfolioConfig
    config: ProjectConfig
    store: Store
    repo: GitRepo
    services: Services = field(default_factory=Services)

    @classmethod
    def open(cls, ref: ProjectRef, services: Services | None = None) -> ProjectContext:
        portfolio = load_portfolio(ref.config_path)
        config = portfolio.project(ref.project)
        repo = GitRepo(config.path, config.main_branch)
        repo.ensure_excluded()
        remember(s.value for s in known_secrets(portfolio, config))  # redacted whatever their names
        store = Store.for_project(portfolio.data_dir, config.name)
        return cls(ref=ref, portfolio=portfolio, config=config, store=store, repo=repo,
                   services=services or Services())

    def close(self) -> None:
        """Close the store now: an open SQLite connection otherwise lives until garbage collection."""
        self.store.close()

    def __enter__(self) -> ProjectContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def orch_dir(self) -> Path:
        return self.repo.orch_dir

    @property
    def results_dir(self) -> Path:
        """Where Prefect persists step results (shared by all projects of the portfolio)."""
        return self.portfolio.results_dir

    @property
    def claude_config_dir(self) -> Path:
        """CLAUDE_CONFIG_DIR for agents unless the user set one: keeps sessions resumable."""
        return self.portfolio.data_dir / "claude"

    def branch(self, name: str) -> str:
        return f"{self.config.git_branch_prefix}/{name}"

    def send_back(self, task: Task, reason: str) -> None:
        """An attempt failed: the task goes back (or fails for good) and its branch goes."""
        self.store.fail_attempt(task.id, reason)
        self.repo.remove_worktree(task.id, self.branch(task.id))

    def base_worktree(self, cycle_id: str, base_commit: str) -> Path:
        """A clean checkout of the cycle's base commit, made once per cycle."""
        name = f"base-{cycle_id}"
        path = self.orch_dir / "worktrees" / name
        if self.repo.is_worktree(path) and self.repo.head_of(path) == base_commit:
            return path
        return self.repo.add_worktree(name, self.branch(name), base_commit)

    def agent_spec(
        self,
        role: Role,
        cwd: Path,
        *,
        cycle_id: str,
        task_id: str | None = None,
        task_type: TaskType | None = None,
        attempt: int = 1,
        output_model: type[BaseModel] | None = None,
    ) -> AgentSpec:
        """The agent settings of a role in this project, from its config."""
        c = self.config
        model, budget, timeout_s, turns = {
            Role.planner: (c.planner_model, c.max_budget_per_plan, c.planner_timeout_seconds, c.planner_max_turns),
            Role.worker: (c.model, c.max_budget_per_task, c.worker_timeout_seconds, c.worker_max_turns),
            Role.judge: (c.judge_model, c.max_budget_per_review, c.judge_timeout_seconds, c.judge_max_turns),
            Role.resolver: (c.resolver_model or c.model, c.max_budget_per_task, c.worker_timeout_seconds, c.worker_max_turns),
        }[role]
        return AgentSpec(
            role=role,
            model=model,
            system_prompt=load_prompt(role, task_type),
            cwd=cwd,
            max_budget_usd=budget,
            timeout_s=timeout_s,
            max_turns=turns,
            stall_s=c.agent_stall_seconds,
            task_id=task_id,
            output_model=output_model,
            session_id=session_uuid(self.name, cycle_id, task_id or "", role.value, attempt),
            config_dir=self.claude_config_dir,
            slot=self._slot(),
            slot_watch=CycleSlotWatch(self.store, cycle_id),
            api_retries=c.api_retries,
            retry_base_s=c.api_retry_base_seconds,
            spend=self.budget(cycle_id),
            fence=fence_for(self.portfolio, c, cwd, effective_config_dir(self.claude_config_dir)),
            owner=str(self.repo.path),
            park=ProjectPark(self.store, self.services.clock),
            # A resolver's answer means nothing once the merge whose files it fixed is gone.
            replay=role is not Role.resolver,
        )

    def _slot(self) -> SlotHolder | None:
        slots, pool = self.services.slots, self.portfolio.agent_pool
        if slots is None or self.portfolio.max_total_workers is None:
            return None
        return lambda watch: slots(pool, watch)

    def budget(self, cycle_id: str) -> CycleBudget:
        """The project's spend caps as seen by one cycle."""
        return CycleBudget(self.config, self.store, cycle_id, self.services.ledger, self.services.clock)


async def in_thread(ref: ProjectRef, fn: Callable[..., T], *args: Any) -> T:
    """``fn(context, *args)`` in a worker thread, with a context opened there.

    For blocking work (network, git) off the event loop: a store's SQLite
    connection may only be used by the thread that opened it.
    """
    def call() -> T:
        with ProjectContext.open(ref) as ctx:
            return fn(ctx, *args)

    return await anyio.to_thread.run_sync(call)
