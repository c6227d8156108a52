"""Read-only reports on a portfolio's stores, behind the CLI's read commands.

Pure functions: they read the projects' SQLite stores and return pydantic
models, which the CLI renders as tables or dumps as JSON. Nothing here
prints or talks to Prefect; the next scheduled runs come in as a parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from orchestrator.adapters.checks import flaky_names
from orchestrator.adapters.store import Store
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.errors import ConfigError, StoreError
from orchestrator.domain.models import (
    MERGE_WAITED,
    CycleStatus,
    Task,
    TaskStatus,
    TaskWait,
    Verdict,
    WorkResult,
)
from orchestrator.domain.state import CostRow, Cycle, MergeRecord, ProjectState
from orchestrator.stages import rate_limit
from orchestrator.stages.approval import describe
from orchestrator.stages.capacity import cap_note

__all__ = [
    "CostDimension",
    "CostGroup",
    "CostLine",
    "CostReport",
    "CycleRow",
    "CycleStory",
    "PlannedItem",
    "ProjectStatus",
    "TaskStory",
    "VerdictView",
    "WorkView",
    "cost_report",
    "cycle_rows",
    "cycle_story",
    "open_store",
    "status_rows",
]


class CostDimension(StrEnum):
    """What the cost dashboard groups by."""

    project = "project"
    role = "role"
    model = "model"
    day = "day"  # UTC date of the session's record


class ProjectStatus(BaseModel):
    """One project's line in ``orch status``."""

    project: str
    enabled: bool
    paused: bool
    paused_reason: str = ""
    next_run: str | None = None  # ISO UTC; None when Prefect has none scheduled
    pending: int = 0
    in_progress: int = 0
    in_review: int = 0  # pull requests open
    done: int = 0
    failed: int = 0
    last_cycle_id: str | None = None
    last_cycle_status: CycleStatus | None = None
    last_cycle_at: str | None = None  # when it finished, or started if still running
    found_work_at: str | None = None  # when a cycle last claimed a task (cycles find nothing while idle)
    cost_usd: float = 0.0
    merge_waiting: str = ""  # why passing work waits to reach main ('' when nothing waits)
    budget_stop: str = ""  # which cap stopped the work and when it resets ('' when none holds)
    rate_limit: str = ""  # "rate-limited until HH:MM (UTC)" and why, while the model API's limit holds
    approval: str = ""  # the cycle waiting for approval, until when ('' when none)
    agent_cap: str = ""  # what the portfolio's max_total_workers does to it ('' when nothing)
    flaky_on_main: list[str] = Field(default_factory=list)  # failed on the last base, passed when run again
    pull_requests: list[str] = Field(default_factory=list)  # URLs of the open ones


class CycleRow(BaseModel):
    """One cycle's line in ``orch cycles``."""

    project: str
    cycle_id: str
    status: CycleStatus
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None  # None while running
    planned: int = 0
    merged: int = 0
    rejected: int = 0
    cost_usd: float = 0.0


class PlannedItem(BaseModel):
    """A task the cycle's planner added."""

    task_id: str
    title: str
    depends_on: list[str] = Field(default_factory=list)


class WorkView(BaseModel):
    """A worker's result for one task, as ``orch show`` tells it."""

    attempt: int
    success: bool
    summary: str = ""
    error: str = ""
    diff_stat: str = ""
    files_changed: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
    duration_s: float = 0.0


class VerdictView(BaseModel):
    """The judge's verdict on one task's branch."""

    passed: bool
    reasons: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
    flaky_tests: list[str] = Field(default_factory=list)  # failed, then passed when run again


class TaskStory(BaseModel):
    """What happened to one task in one cycle."""

    task_id: str
    title: str
    status: str  # the task's status now, not at the end of the cycle
    work: WorkView | None = None
    verdict: VerdictView | None = None
    merged: bool = False
    merge_commit: str | None = None
    resolved_conflict: bool = False


class CostLine(BaseModel):
    """Cost of one role on one model."""

    role: str
    model: str
    cost_usd: float
    sessions: int


class CycleStory(BaseModel):
    """The story of one cycle, for ``orch show``."""

    project: str
    cycle_id: str
    status: CycleStatus
    base_commit: str
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    message: str = ""
    plan_path: str = ""
    planned: list[PlannedItem] = Field(default_factory=list)
    tasks: list[TaskStory] = Field(default_factory=list)
    costs: list[CostLine] = Field(default_factory=list)
    total_cost_usd: float = 0.0


class CostGroup(BaseModel):
    """Total cost and session count of one value of a dimension."""

    key: str
    cost_usd: float
    sessions: int


class CostReport(BaseModel):
    """The cost dashboard: totals by each chosen dimension, and overall."""

    project: str | None = None  # the one project reported on, None for all
    groups: dict[str, list[CostGroup]] = Field(default_factory=dict)  # dimension -> groups
    total_cost_usd: float = 0.0
    sessions: int = 0


@contextmanager
def open_store(portfolio: PortfolioConfig, project: str) -> Iterator[Store]:
    """The store of a portfolio project, closed on exit; ConfigError if unknown."""
    name = portfolio.project(project).name
    with closing(Store.for_project(portfolio.data_dir, name)) as store:
        yield store


def _stores(portfolio: PortfolioConfig, project: str | None = None) -> Iterator[tuple[str, Store]]:
    """(name, store) of one project, or of every project in the portfolio's order."""
    names = [portfolio.project(project).name] if project else [p.name for p in portfolio.projects]
    for name in names:
        with closing(Store.for_project(portfolio.data_dir, name)) as store:
            yield name, store


def _duration_s(started: str | None, finished: str | None) -> float | None:
    if not started or not finished:
        return None
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def status_rows(portfolio: PortfolioConfig, next_runs: Mapping[str, datetime]) -> list[ProjectStatus]:
    """Every project's status; ``next_runs`` maps project name -> next scheduled run."""
    rows = []
    for name, store in _stores(portfolio):
        counts, state = store.count_by_status(), store.state()
        # The newest cycle, running or not (project_state only learns of finished ones).
        last = next(iter(store.list_cycles(limit=1)), None)
        next_run = next_runs.get(name)
        rows.append(ProjectStatus(
            project=name, enabled=portfolio.project(name).enabled,
            paused=state.paused, paused_reason=state.paused_reason,
            next_run=next_run.astimezone(UTC).isoformat(timespec="seconds") if next_run else None,
            pending=counts["pending"], in_progress=counts["in_progress"], in_review=counts["in_review"],
            done=counts["done"], failed=counts["failed"],
            last_cycle_id=last.id if last else None,
            last_cycle_status=last.status if last else None,
            last_cycle_at=(last.finished_at or last.started_at) if last else None,
            found_work_at=state.found_work_at,
            cost_usd=store.total_cost(),
            merge_waiting=_merge_waiting(store),
            budget_stop=_budget_stop(state),
            rate_limit=rate_limit.holds(state, datetime.now(UTC)),
            approval="; ".join(describe(r) for r in store.waiting_approvals()),
            agent_cap=cap_note(portfolio, portfolio.project(name), last),
            flaky_on_main=state.flaky_on_main,
            pull_requests=[t.pr_url for t in store.list_tasks(TaskStatus.in_review, limit=20) if t.pr_url],
        ))
    return rows


def _budget_stop(state: ProjectState) -> str:
    """The cap that stopped work, while it still holds (a per-day cap lifts at midnight UTC)."""
    resets = state.budget_resets_at
    if resets and datetime.fromisoformat(resets) <= datetime.now(UTC):
        return ""
    return state.budget_stop


def _merge_waiting(store: Store) -> str:
    # The refinery gives such tasks back with this reason, keeping their attempt.
    return store.waiting_failure(TaskWait.merge).removeprefix(MERGE_WAITED)


def _cycle_row(project: str, store: Store, cycle: Cycle) -> CycleRow:
    if cycle.summary is not None:
        rejected = len(cycle.summary.rejected)
    else:  # still running: the summary is written when the cycle ends
        rejected = sum(1 for v in store.verdicts(cycle.id) if not v.passed)
    return CycleRow(
        project=project, cycle_id=cycle.id, status=cycle.status,
        started_at=cycle.started_at, finished_at=cycle.finished_at,
        duration_s=_duration_s(cycle.started_at, cycle.finished_at),
        planned=len(cycle.planned), merged=len(store.merged_task_ids(cycle.id)),
        rejected=rejected,
        # From agent_costs rather than the row's cost_usd, which is set only at the end.
        cost_usd=round(sum(store.costs_by_role(cycle.id).values()), 6),
    )


def cycle_rows(
    portfolio: PortfolioConfig, project: str | None = None, limit: int = 20
) -> list[CycleRow]:
    """The ``limit`` most recent cycles of one project or of all, newest first."""
    rows: list[CycleRow] = []
    for name, store in _stores(portfolio, project):
        rows += [_cycle_row(name, store, cycle) for cycle in store.list_cycles(limit)]
    rows.sort(key=lambda r: r.started_at, reverse=True)
    return rows[:limit]


def find_cycle(
    portfolio: PortfolioConfig, cycle_id: str, project: str | None
) -> tuple[str, Cycle]:
    """(project, cycle) of the one cycle whose id starts with ``cycle_id``."""
    if not cycle_id.strip():
        raise ConfigError("the cycle id must not be empty: see `orch cycles`")
    matches = [
        (name, cycle) for name, store in _stores(portfolio, project)
        for cycle in store.find_cycles(cycle_id, limit=4)
    ]
    where = f" in project {project!r}" if project else ""
    if not matches:
        raise StoreError(f"unknown cycle id {cycle_id!r}{where}: see `orch cycles`")
    if len(matches) > 1:
        found = ", ".join(f"{cycle.id} ({name})" for name, cycle in matches[:3])
        more = ", ..." if len(matches) > 3 else ""
        raise StoreError(
            f"cycle id {cycle_id!r} is ambiguous{where}: it matches {found}{more}; "
            "give more of the id, or --project"
        )
    return matches[0]


def _task(store: Store, task_id: str) -> Task | None:
    # A story is told from whatever is left: a missing task is not an error here.
    return store.get_task(task_id) if store.has_task(task_id) else None


def _planned(store: Store, task_id: str) -> PlannedItem:
    task = _task(store, task_id)
    return PlannedItem(task_id=task_id, title=_title(store, task_id), depends_on=task.depends_on if task else [])


def waits_for(store: Store, task: Task) -> str:
    """What keeps a task from being claimed: the failed tasks that block it, or those it comes after."""
    if task.status is TaskStatus.blocked:
        return "blocked by " + ", ".join(f"{t.id} (failed)" for t in store.failed_roots(task))
    if task.status is TaskStatus.pending:
        waiting = store.blockers(task)
        return "after " + ", ".join(t.id for t in waiting) if waiting else ""
    return ""


def _title(store: Store, task_id: str) -> str:
    task = _task(store, task_id)
    return task.title if task else "(unknown task)"


def _task_story(store: Store, task_id: str, work: WorkResult | None,
                verdict: Verdict | None, merge: MergeRecord | None) -> TaskStory:
    task = _task(store, task_id)
    return TaskStory(
        task_id=task_id, title=task.title if task else "(unknown task)",
        status=task.status.value if task else "unknown",
        work=WorkView.model_validate(work.model_dump()) if work else None,
        verdict=VerdictView(
            passed=verdict.passed, reasons=verdict.reasons, cost_usd=verdict.cost_usd,
            flaky_tests=flaky_names(verdict.tests) if verdict.tests else [],
        ) if verdict else None,
        merged=merge is not None, merge_commit=merge.commit if merge else None,
        resolved_conflict=merge.resolved_conflict if merge else False,
    )


def _cost_lines(breakdown: list[CostRow]) -> list[CostLine]:
    """Role-and-model totals of a cost breakdown (its days summed)."""
    totals: dict[tuple[str, str], tuple[float, int]] = {}
    for row in breakdown:
        cost, sessions = totals.get((row.role, row.model), (0.0, 0))
        totals[row.role, row.model] = (cost + row.cost_usd, sessions + row.sessions)
    return [
        CostLine(role=role, model=model, cost_usd=round(cost, 6), sessions=sessions)
        for (role, model), (cost, sessions) in sorted(totals.items())
    ]


def cycle_story(
    portfolio: PortfolioConfig, cycle_id: str, project: str | None = None
) -> CycleStory:
    """The story of the cycle whose id starts with ``cycle_id``, searched in every
    project unless ``project`` is given; StoreError if none or several match."""
    name, cycle = find_cycle(portfolio, cycle_id, project)
    with open_store(portfolio, name) as store:
        cid = cycle.id
        # Keyed by task: a task has one attempt per cycle, so the last row is the one.
        work = {r.task_id: r for r in store.cycle_worker_results(cid)}
        verdicts = {v.task_id: v for v in store.verdicts(cid)}
        merges = {m.task_id: m for m in store.merges(cid)}
        touched = dict.fromkeys([*(cycle.claimed or []), *work, *verdicts, *merges])
        costs = _cost_lines(store.cost_breakdown(cid))
        return CycleStory(
            project=name, cycle_id=cid, status=cycle.status, base_commit=cycle.base_commit,
            started_at=cycle.started_at, finished_at=cycle.finished_at,
            duration_s=_duration_s(cycle.started_at, cycle.finished_at),
            message=cycle.message, plan_path=cycle.plan_path,
            planned=[_planned(store, t) for t in cycle.planned],
            tasks=[
                _task_story(store, t, work.get(t), verdicts.get(t), merges.get(t)) for t in touched
            ],
            costs=costs, total_cost_usd=round(sum(c.cost_usd for c in costs), 6),
        )


def _sorted_groups(dimension: CostDimension, totals: dict[str, list[float]]) -> list[CostGroup]:
    groups = [CostGroup(key=k, cost_usd=round(c, 6), sessions=int(n)) for k, (c, n) in totals.items()]
    if dimension is CostDimension.day:
        return sorted(groups, key=lambda g: g.key)  # a timeline reads oldest first
    return sorted(groups, key=lambda g: (-g.cost_usd, g.key))


def cost_report(
    portfolio: PortfolioConfig, by: CostDimension | None = None, project: str | None = None
) -> CostReport:
    """Agent costs of one project or of all, grouped by ``by`` (None: every dimension)."""
    dimensions = [by] if by else list(CostDimension)
    totals: dict[CostDimension, dict[str, list[float]]] = {d: {} for d in dimensions}
    total, sessions = 0.0, 0
    for name, store in _stores(portfolio, project):
        if CostDimension.project in totals:  # listed even when it has cost nothing yet
            totals[CostDimension.project].setdefault(name, [0.0, 0])
        for row in store.cost_breakdown():
            values = {CostDimension.project: name, CostDimension.role: row.role,
                      CostDimension.model: row.model, CostDimension.day: row.day}
            for dimension in dimensions:
                group = totals[dimension].setdefault(values[dimension], [0.0, 0])
                group[0] += row.cost_usd
                group[1] += row.sessions
            total += row.cost_usd
            sessions += row.sessions
    return CostReport(
        project=project,
        groups={d.value: _sorted_groups(d, totals[d]) for d in dimensions},
        total_cost_usd=round(total, 6), sessions=sessions,
    )
