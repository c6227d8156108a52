"""The plan stage: ask the planner agent for a few small tasks, then check them.

The planner's word is not final: the orchestrator caps the number of tasks,
refuses one that repeats a failed task as is, and drops duplicates of open
ones. Task ids are derived from the cycle, so recording a replayed plan
inserts nothing twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio

from orchestrator.adapters.agent import run_agent
from orchestrator.adapters.audit import write_failed_plan, write_plan
from orchestrator.adapters.github import GitHubError
from orchestrator.adapters.prompts import untrusted
from orchestrator.domain.errors import AgentError, BudgetReached
from orchestrator.domain.models import CycleStatus, Plan, PlanOutput, Role, Task, TaskStatus
from orchestrator.stages.backlog import backlog_text, open_items
from orchestrator.stages.backlog_file import BacklogItem
from orchestrator.stages.context import ProjectContext
from orchestrator.stages.plan_graph import plan_graph
from orchestrator.stages.plan_inputs import HISTORY_CYCLES, digest, unchanged

_CONTEXT_LIMIT = 20_000  # characters per context file given to the planner


def open_slots(ctx: ProjectContext) -> int:
    """How many tasks the planner may add: ``max_workers`` less those pending."""
    pending = ctx.store.count_by_status()[TaskStatus.pending.value]
    return max(0, ctx.config.max_workers - pending)


def _read_limited(path: Path) -> str | None:
    if not path.is_file():
        return None
    content = path.read_text(encoding="utf-8", errors="replace")
    return content if len(content) <= _CONTEXT_LIMIT else content[:_CONTEXT_LIMIT] + "\n[truncated]"


def build_prompt(ctx: ProjectContext, root: Path, max_tasks: int, items: list[BacklogItem]) -> str:
    """The planner's user message: context, backlog, task state and the limit."""
    parts = [f"# Planning a cycle of project {ctx.name}", ""]
    parts.append(f"Emit at most {max_tasks} task(s).")
    if ctx.config.test_command:
        parts.append(f"The project's test command is `{ctx.config.test_command}`.")
    parts += ["", "## Context files", ""]
    for name in ctx.config.planner_context_files:
        content = _read_limited(root / name)
        parts.append(f"### {name}\n\n{content if content is not None else '(missing)'}\n")
    parts += ["## Backlog", "", backlog_text(ctx, items), "", "## Open tasks", ""]
    open_tasks = [t for s in (TaskStatus.pending, TaskStatus.in_progress, TaskStatus.in_review, TaskStatus.blocked)
                  for t in ctx.store.list_tasks(s)]
    # Titles, reasons and test output were written by agents, issues and tests: data, not instructions.
    listed = "\n".join(f"- `{t.id}` [{t.status.value}] {t.title}" for t in open_tasks)
    parts.append(untrusted(listed, "the open tasks' titles") if listed else "None.")
    parts += ["", "## Recently failed attempts (do not re-emit these as they are)", ""]
    failures = "\n".join(f"- {t.title} ({t.status.value}): {t.last_failure}" for t in ctx.store.recent_failures())
    parts.append(untrusted(failures, "failed tasks and why: reviewers' reasons and test output") if failures else "None.")
    parts += ["", "## Recent cycles (say in `lessons` what they teach)", "",
              untrusted(recent_history(ctx), "the recent cycles' outcomes and rejection reasons")]
    return "\n".join(parts)


def recent_history(ctx: ProjectContext, cycles: int = HISTORY_CYCLES, before: str = "") -> str:
    """What the last finished cycles (other than ``before``) merged and rejected, and why."""
    finished = [c for c in ctx.store.list_cycles(limit=cycles + 5)
                if c.status is not CycleStatus.running and c.id != before][:cycles]
    if not finished:
        return "None: this is the project's first cycle."
    lines: list[str] = []
    for cycle in finished:
        merged = cycle.summary.merged if cycle.summary else []
        rejected = cycle.summary.rejected if cycle.summary else {}
        lines.append(f"### Cycle {cycle.id} ({cycle.status}, {cycle.finished_at or cycle.started_at})")
        if cycle.message:
            lines.append(f"Note: {cycle.message}")
        titles = {t.id: t.title for t in ctx.store.tasks_of(list(merged) + list(rejected))}
        lines += [f"- merged: {titles[t]}" for t in merged]
        for task_id, why in rejected.items():
            reason = " ".join(why.split())
            lines.append(f"- not merged: {titles[task_id]}: {reason[:400]}")
        if not merged and not rejected:
            lines.append("- nothing merged or rejected")
    return "\n".join(lines)


def task_id_for(cycle_id: str, index: int) -> str:
    """Stable id of the n-th task planned in a cycle."""
    return hashlib.sha256(f"{cycle_id}:{index}".encode()).hexdigest()[:12]


def accept_tasks(ctx: ProjectContext, plan: Plan, output: PlanOutput) -> tuple[list[Task], list[str]]:
    """Turn planned tasks into store tasks, refusing what must not run.

    A task linked to a backlog item the planner was not shown loses the link;
    one whose item already has an open or finished task is a duplicate. A
    task's prerequisites (``depends_on``, and its item's ``depends:``) become
    task ids; one naming no task, on a cycle, or waiting for a refused task is
    refused. Tasks are taken prerequisites first, so the cap keeps a chain whole.
    """
    cycle_id, max_tasks = plan.cycle_id, plan.max_tasks
    failed = ctx.store.failed_fingerprints()
    seen = ctx.store.live_fingerprints()
    shown = set(plan.backlog_ids)
    linked = {i for i in shown if any(t.status is not TaskStatus.failed for t in ctx.store.linked_tasks(i))}
    ids = [task_id_for(cycle_id, index) for index in range(len(output.tasks))]
    items = [p.backlog_item if p.backlog_item in shown else None for p in output.tasks]
    names = [list(p.depends_on) for p in output.tasks]
    item_refusals: dict[int, str] = {}
    for index, item in enumerate(items):
        for wanted in plan.backlog_depends.get(item or "", []):
            task_id = _task_of_item(ctx, wanted, items, ids, shown)
            if task_id:
                names[index].append(task_id)
            else:
                item_refusals[index] = f"backlog item {item} waits for item {wanted}, which has no task yet"
    graph = plan_graph([p.title for p in output.tasks], names, ids, ctx.store.has_task)
    accepted: list[Task] = []
    rejected: list[str] = []
    refused: set[str] = set()
    for index in graph.order:
        planned, item = output.tasks[index], items[index]
        task = Task(
            id=ids[index],
            title=planned.title,
            description=planned.description,
            type=planned.type,
            priority=planned.priority,
            cycle_id=cycle_id,
            max_attempts=ctx.config.max_task_attempts,
            backlog_item=item,
            source="backlog" if item else "planner",
            depends_on=list(dict.fromkeys(graph.prerequisites[index])),
        )
        waits_for = next((t for t in task.depends_on if t in refused), None)
        why = ""
        if ctx.store.has_task(task.id):  # recorded before a crash: keep it
            accepted.append(ctx.store.get_task(task.id))
            continue
        if index in graph.refused or index in item_refusals:
            why = graph.refused.get(index) or item_refusals[index]
        elif waits_for is not None:
            why = f"waits for {output.tasks[ids.index(waits_for)].title!r}, which was refused"
        elif task.fingerprint in failed:
            why = "repeats a failed task as is"
        elif task.fingerprint in seen:
            why = "duplicates an open or finished task"
        elif item in linked:
            why = f"backlog item {item} already has a task"
        elif len(accepted) >= max_tasks:
            why = f"over the limit of {max_tasks} task(s)"
        if why:
            rejected.append(f"{planned.title}: {why}")
            refused.add(task.id)
            continue
        accepted.append(task)
        seen.add(task.fingerprint)
        if item:
            linked.add(item)
    return accepted, rejected


def _task_of_item(ctx: ProjectContext, item: str, items: list[str | None], ids: list[str], shown: set[str]) -> str:
    """The task that does backlog ``item``: one of this plan, else the store's latest ('' if none)."""
    if item in items:
        return ids[items.index(item)]
    if item not in shown:
        return ""
    tasks = sorted(ctx.store.linked_tasks(item), key=lambda t: (t.status is not TaskStatus.failed, t.created_at))
    return tasks[-1].id if tasks else ""


async def plan(ctx: ProjectContext, cycle_id: str, base_commit: str) -> Plan:
    """Run the planner when there is room for tasks and it has something new to read; otherwise plan nothing."""
    slots = open_slots(ctx)
    if slots == 0 or ctx.config.backlog_source == "manual":
        return Plan(cycle_id=cycle_id, ran_planner=False)
    # Git, and GitHub with its retries: off the event loop, where other projects' sessions run.
    root = await anyio.to_thread.run_sync(ctx.base_worktree, cycle_id, base_commit)
    try:
        items = await anyio.to_thread.run_sync(open_items, ctx, root)
    except GitHubError as exc:  # the pending tasks can still be worked on
        return Plan(cycle_id=cycle_id, ran_planner=False, max_tasks=slots, error=f"cannot read the backlog: {exc}")
    inputs = digest(ctx, base_commit, items)
    if reason := unchanged(ctx, inputs, ctx.services.clock()):  # the pending tasks are worked on
        return Plan(cycle_id=cycle_id, ran_planner=False, max_tasks=slots, unchanged=reason)
    prompt = build_prompt(ctx, root, slots, items)
    spec = ctx.agent_spec(Role.planner, root, cycle_id=cycle_id, output_model=PlanOutput)
    try:
        run = await run_agent(spec, prompt)
    except BudgetReached as exc:
        return Plan(cycle_id=cycle_id, ran_planner=False, max_tasks=slots, budget_stop=str(exc))
    except AgentError as exc:  # retried already if it was transient
        return Plan(cycle_id=cycle_id, ran_planner=True, max_tasks=slots, error=str(exc),
                    cost_usd=exc.cost_usd, session_id=exc.session_id or "")
    output = PlanOutput.model_validate(run.structured)
    return Plan(
        cycle_id=cycle_id, ran_planner=True, max_tasks=slots, output=output, cost_usd=run.cost_usd,
        session_id=run.session_id, backlog_ids=[i.id for i in items], inputs=inputs,
        backlog_depends={i.id: list(i.depends_on) for i in items if i.depends_on},
    )


def adopt(ctx: ProjectContext, plan: Plan) -> Path | None:
    """Take a plan's result: store the tasks it may add, record its cost, write the plan document.

    Called by the flow after the plan step, so a plan replayed from Prefect's
    cache is adopted too; adopting it again changes nothing more. Returns the
    document's path (None when there is no plan).
    """
    accepted: list[Task] = []
    if plan.budget_stop:
        path = write_failed_plan(ctx.orch_dir, plan.cycle_id, f"the planner did not start: {plan.budget_stop}")
    elif plan.error:
        path = write_failed_plan(ctx.orch_dir, plan.cycle_id, plan.error)
    elif plan.output is None:
        return None
    else:
        planned, rejected = accept_tasks(ctx, plan, plan.output)
        accepted = [ctx.store.add_task(task) for task in planned]  # one after a failed task is blocked
        history = recent_history(ctx, before=plan.cycle_id)
        path = write_plan(ctx.orch_dir, plan.cycle_id, plan.output, accepted, rejected + plan.rejected, history)
        ctx.store.set_planned(plan.inputs, ctx.services.clock().isoformat())
    ctx.store.update_cycle(
        plan.cycle_id, planned=[t.id for t in accepted], plan_path=str(path),
        session_id=plan.session_id,
    )
    ctx.store.record_cost(plan.session_id, plan.cycle_id, None, Role.planner, ctx.config.planner_model, plan.cost_usd)
    return path
