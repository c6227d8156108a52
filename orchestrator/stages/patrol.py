"""Patrol: tidy up after dead runs and stop a project that keeps failing.

A cycle patrols right after it takes the project's lock (see :mod:`orchestrator.adapters.lock`),
so no other cycle of the project is alive. The newest cycle still marked
running is about to be re-entered and is left as it is; every older one, and
every task or worktree that no live cycle holds, belongs to a run that died.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from orchestrator.adapters.leash import PROJECT_ENV, reap
from orchestrator.domain.models import CycleStatus, TaskStatus, keeps_work
from orchestrator.stages import cycle, retention
from orchestrator.stages.context import ProjectContext
from orchestrator.stages.refinery import integration_name


class PatrolReport(BaseModel):
    """What a patrol found and did."""

    abandoned_cycles: list[str] = Field(default_factory=list)
    dead_flow_runs: list[str] = Field(default_factory=list)
    """Flow runs of cycles whose process died; the Prefect layer marks them crashed."""
    sent_back: list[str] = Field(default_factory=list)
    removed_worktrees: list[str] = Field(default_factory=list)
    removed_branches: list[str] = Field(default_factory=list)
    reaped: list[int] = Field(default_factory=list)
    """Processes of agent sessions a crash left running (their leash died with the run)."""
    collected: int = 0
    """Files past ``retention_days`` removed (see :mod:`orchestrator.stages.retention`)."""
    paused_reason: str = ""
    """Set when the project was paused for failing too often (see :func:`pause_if_failing`)."""


def patrol(ctx: ProjectContext) -> PatrolReport:
    """Close dead cycles, send back tasks nobody works on, remove orphan worktrees and branches."""
    report = PatrolReport()
    running = ctx.store.running_cycles()
    resumable = running[0].id if running else None
    suspended = {r.flow_run_id for r in ctx.store.waiting_approvals()}  # waiting, not dead
    for found in running:
        if found.flow_run_id and found.flow_run_id not in suspended:
            report.dead_flow_runs.append(found.flow_run_id)
        if found.id != resumable:
            summary = cycle.summarize(ctx, found.id, CycleStatus.failed, "abandoned: the run that held it died")
            cycle.abandon(ctx, found.id, summary)
            report.abandoned_cycles.append(found.id)
    for task in ctx.store.list_tasks(TaskStatus.in_progress):
        if task.claimed_by != resumable:
            ctx.send_back(task, "its cycle's run died before finishing it")
            report.sent_back.append(task.id)
    # No session of the project is alive now: any process still marked as its own is left over.
    report.reaped = reap(PROJECT_ENV, str(ctx.repo.path))
    _remove_orphans(ctx, resumable, report)
    old = retention.garbage(ctx, ctx.services.clock())
    retention.remove(old, ctx.store)
    report.collected = len(old.paths())
    return report


def _remove_orphans(ctx: ProjectContext, resumable: str | None, report: PatrolReport) -> None:
    live = {t.id for t in ctx.store.list_tasks(TaskStatus.in_progress) if t.claimed_by == resumable}
    live |= {t.id for t in ctx.store.list_tasks(TaskStatus.pending) if keeps_work(t)}
    if resumable:
        live |= {f"base-{resumable}", f"main-{resumable}", integration_name(resumable)}
    for path in ctx.repo.list_worktrees():
        if path.name not in live:
            ctx.repo.remove_worktree(path.name)
            report.removed_worktrees.append(path.name)
    prefix = ctx.config.git_branch_prefix
    for branch in ctx.repo.list_orch_branches(prefix):
        if branch.removeprefix(f"{prefix}/") not in live and ctx.repo.delete_branch(branch):
            report.removed_branches.append(branch)


def pause_if_failing(ctx: ProjectContext) -> str:
    """Pause the project after ``max_consecutive_failures`` failed tasks in a row; the reason, or ''."""
    state = ctx.store.state()
    streak, limit = state.consecutive_failures, ctx.config.max_consecutive_failures
    if state.paused or streak < limit:
        return ""
    reason = (f"{streak} tasks failed in a row (max_consecutive_failures is {limit}): "
              "see `orch tasks --status failed`, then `orch resume`")
    ctx.store.set_paused(True, reason)
    return reason
