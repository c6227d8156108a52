"""Bookkeeping between the steps of a cycle, called from flow code.

Prefect replays a finished step from its cached result without running its
body, so everything a step's result implies for the store and the audit
trail is written here, by the flow, after each step. Every function is
idempotent: calling it again with the same result changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.adapters.audit import (
    write_merge,
    write_verdict,
    write_worker,
)
from orchestrator.domain.models import (
    CycleStatus,
    CycleSummary,
    MergeOutcome,
    Role,
    Task,
    TaskStatus,
    TaskWait,
    Verdict,
    Wait,
    WorkResult,
    new_id,
)
from orchestrator.stages.context import ProjectContext
from orchestrator.stages.pulls import pull_number


@dataclass(frozen=True)
class CycleStart:
    """The cycle being run: a new one, or one a crash left unfinished."""

    cycle_id: str
    base_commit: str
    resumed: bool


def begin(ctx: ProjectContext, cycle_id: str | None = None, flow_run_id: str = "") -> CycleStart | None:
    """Re-enter the named or the unfinished cycle, or start a new one from main.

    None when the named cycle is finished: a run meant to continue it has nothing to do.
    """
    found = ctx.store.get_cycle(cycle_id) if cycle_id else ctx.store.unfinished_cycle()
    if found is not None and found.status is CycleStatus.running:
        if flow_run_id and found.flow_run_id != flow_run_id:  # this run carries it on now
            ctx.store.update_cycle(found.id, flow_run_id=flow_run_id)
        ctx.store.update_cycle(found.id, slot_waiting=0)  # the waits of a run that died ended with it
        return CycleStart(found.id, found.base_commit, resumed=True)
    if cycle_id:
        return None
    start = CycleStart(new_id(), ctx.repo.head(), resumed=False)
    ctx.store.start_cycle(start.cycle_id, start.base_commit, flow_run_id)
    return start


def claim(ctx: ProjectContext, cycle_id: str) -> list[Task]:
    """The tasks this cycle works on: claimed once, the same ones after a crash."""
    claimed = ctx.store.get_cycle(cycle_id).claimed
    if claimed is not None:  # claimed before a crash, maybe nothing: the same again
        return ctx.store.tasks_of(claimed)
    tasks = ctx.store.claim_tasks(cycle_id, ctx.config.max_workers)
    ctx.store.update_cycle(cycle_id, claimed=[t.id for t in tasks])
    if tasks:
        ctx.store.set_found_work(ctx.services.clock().isoformat())
    return tasks


def still_held(ctx: ProjectContext, cycle_id: str, task: Task) -> bool:
    """True while the task is in progress for this cycle (not failed or done)."""
    current = ctx.store.get_task(task.id)
    return current.status is TaskStatus.in_progress and current.claimed_by == cycle_id


def record_work(ctx: ProjectContext, task: Task, result: WorkResult) -> None:
    ctx.store.record_work(result)
    ctx.store.record_cost(result.session_id, result.cycle_id, task.id, Role.worker, ctx.config.model, result.cost_usd)
    write_worker(ctx.orch_dir, task, result)
    if result.budget_stop and still_held(ctx, result.cycle_id, task):
        ctx.store.release_task(task.id)  # nothing was done: back as it was
        ctx.repo.remove_worktree(task.id, ctx.branch(task.id))
    elif result.api_fault and still_held(ctx, result.cycle_id, task):
        # Not the agent's failure: the attempt is unspent, and the worktree stays for its session to resume.
        ctx.store.release_task(task.id, Wait(kind=TaskWait.api, reason=result.api_fault))
    elif not result.success and still_held(ctx, result.cycle_id, task):
        ctx.send_back(task, f"worker failed: {result.error}")


def rejection_reasons(verdict: Verdict) -> str:
    """What the next attempt is told: the reasons, and the failing checks' output."""
    text = "judge rejected the change: " + "; ".join(verdict.reasons)
    for check in (verdict.tests, verdict.lint):
        if check is not None and not check.passed:
            text += f"\n\nOutput of `{check.command}` (end):\n{check.output[-1500:]}"
    return text


def record_verdict(ctx: ProjectContext, task: Task, verdict: Verdict) -> None:
    ctx.store.record_verdict(verdict)
    ctx.store.record_cost(verdict.session_id, verdict.cycle_id, task.id, Role.judge, ctx.config.judge_model, verdict.cost_usd)
    write_verdict(ctx.orch_dir, task, verdict, "Not configured." if not ctx.config.test_command else
                  "Not run on this branch: a secret stopped it first, or its cycle tests its branches "
                  "together at the merge (`test_strategy`).")
    if verdict.budget_stop and still_held(ctx, verdict.cycle_id, task):
        ctx.store.release_task(task.id, Wait(kind=TaskWait.budget, reason=verdict.budget_stop))  # keeps its worktree
    elif verdict.api_fault and still_held(ctx, verdict.cycle_id, task):  # the work stands; judged again later
        ctx.store.release_task(task.id, Wait(kind=TaskWait.api, reason=verdict.api_fault))
    elif not verdict.passed and still_held(ctx, verdict.cycle_id, task):
        ctx.send_back(task, rejection_reasons(verdict))


def record_merge(ctx: ProjectContext, outcome: MergeOutcome, tasks: list[Task]) -> None:
    """Mark merged tasks done, send the rest back with the reasons, tidy up."""
    cycle_id = outcome.cycle_id
    for task in tasks:
        if not still_held(ctx, cycle_id, task):
            continue
        if task.id in outcome.merged and outcome.main_updated:
            ctx.store.complete_task(task.id, outcome.merged[task.id])
            ctx.store.record_merge(cycle_id, task.id, outcome.merged[task.id], task.id in outcome.resolved_conflicts)
            ctx.repo.remove_worktree(task.id, ctx.branch(task.id))
        elif task.id in outcome.rejected:
            ctx.send_back(task, "merge failed: " + outcome.rejected[task.id])
        elif task.id in outcome.pulls:
            url = outcome.pulls[task.id]
            ctx.store.update_task(task.id, status=TaskStatus.in_review, claimed_by=None, pr_url=url,
                                  pr_number=pull_number(url))
            ctx.repo.remove_worktree(task.id, ctx.branch(task.id))  # the branch lives on in origin
        else:
            # Waiting (main could not move, or for budget): the task goes back without spending
            # an attempt and keeps its worktree, so the next cycle reuses its work and verdict.
            ctx.store.release_task(task.id, outcome.waiting.get(task.id, Wait(kind=TaskWait.merge,
                                                                             reason=outcome.waiting_reason)))
    for session_id, cost in outcome.resolver_costs.items():
        ctx.store.record_cost(session_id, cycle_id, None, Role.resolver, ctx.config.resolver_model or ctx.config.model, cost)
    write_merge(ctx.orch_dir, outcome, {t.id: t.title for t in tasks})


def finish(ctx: ProjectContext, summary: CycleSummary) -> None:
    """Close the cycle in the store and remove its base worktree."""
    name = f"base-{summary.cycle_id}"
    ctx.repo.remove_worktree(name, ctx.branch(name))
    ctx.store.finish_cycle(summary)


def abandon(ctx: ProjectContext, cycle_id: str, summary: CycleSummary) -> None:
    """A step raised: give the cycle's tasks back and close it as failed."""
    for task in ctx.store.tasks_of(ctx.store.get_cycle(cycle_id).claimed or []):
        if still_held(ctx, cycle_id, task):
            ctx.send_back(task, f"cycle {cycle_id} failed: {summary.message}")
    finish(ctx, summary)


def summarize(ctx: ProjectContext, cycle_id: str, status: CycleStatus, message: str = "") -> CycleSummary:
    """What the cycle did, read back from the store."""
    found = ctx.store.get_cycle(cycle_id)
    planned, claimed = found.planned, found.claimed or []
    verdicts = ctx.store.verdicts(cycle_id)
    merged = ctx.store.merged_task_ids(cycle_id)
    rejected = {}
    for task in ctx.store.tasks_of(claimed):
        if task.id not in merged and task.last_failure:
            rejected[task.id] = task.last_failure
    return CycleSummary(
        project=ctx.name, cycle_id=cycle_id, status=status, message=message,
        planned=planned, worked=claimed,
        passed=[v.task_id for v in verdicts if v.passed],
        rejected=rejected, merged=merged, cost_by_role=ctx.store.costs_by_role(cycle_id),
    )
