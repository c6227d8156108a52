"""The plan stage: ask the planner agent for a few small tasks, then check them.

The planner's word is not final: the orchestrator caps the number of tasks,
refuses one that repeats a failed task as is, and drops duplicates of open
ones. Task ids are derived from the cycle, so recording a replayed plan
inserts nothing twice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .agent import run_agent
from .context import ProjectContext
from .errors import AgentError, BudgetReached, ConfigError
from .models import Plan, PlanOutput, Role, Task, TaskStatus

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


def backlog_text(ctx: ProjectContext, root: Path) -> str:
    """The backlog section of the planner's prompt, by ``backlog_source``."""
    source = ctx.config.backlog_source
    if source == "claude_md":
        return "The context files above are the backlog."
    if source == "backlog_file":
        name = ctx.config.backlog_file or ""
        content = _read_limited(root / name)
        if content is None:
            # The planner reads main as committed, not the user's working files.
            raise ConfigError(
                f"project {ctx.name!r}: backlog_file {name!r} is not committed on {ctx.repo.main}; "
                "commit it or fix the config"
            )
        return f"### {name}\n\n{content}"
    raise ConfigError(
        f"project {ctx.name!r}: backlog_source {source!r} is not supported yet; "
        "use claude_md, backlog_file or manual"
    )


def build_prompt(ctx: ProjectContext, root: Path, max_tasks: int) -> str:
    """The planner's user message: context, backlog, task state and the limit."""
    parts = [f"# Planning a cycle of project {ctx.name}", ""]
    parts.append(f"Emit at most {max_tasks} task(s).")
    if ctx.config.test_command:
        parts.append(f"The project's test command is `{ctx.config.test_command}`.")
    parts += ["", "## Context files", ""]
    for name in ctx.config.planner_context_files:
        content = _read_limited(root / name)
        parts.append(f"### {name}\n\n{content if content is not None else '(missing)'}\n")
    parts += ["## Backlog", "", backlog_text(ctx, root), "", "## Open tasks", ""]
    open_tasks = ctx.store.list_tasks(TaskStatus.pending) + ctx.store.list_tasks(TaskStatus.in_progress)
    parts += [f"- [{t.status.value}] {t.title}" for t in open_tasks] or ["None."]
    parts += ["", "## Recently failed attempts (do not re-emit these as they are)", ""]
    failures = ctx.store.recent_failures()
    parts += [f"- {t.title} ({t.status.value}): {t.last_failure}" for t in failures] or ["None."]
    return "\n".join(parts)


def task_id_for(cycle_id: str, index: int) -> str:
    """Stable id of the n-th task planned in a cycle."""
    return hashlib.sha256(f"{cycle_id}:{index}".encode()).hexdigest()[:12]


def accept_tasks(
    ctx: ProjectContext, cycle_id: str, output: PlanOutput, max_tasks: int
) -> tuple[list[Task], list[str]]:
    """Turn planned tasks into store tasks, refusing what must not run."""
    failed = ctx.store.failed_fingerprints()
    seen = ctx.store.live_fingerprints()
    accepted: list[Task] = []
    rejected: list[str] = []
    for index, planned in enumerate(output.tasks):
        task = Task(
            id=task_id_for(cycle_id, index),
            title=planned.title,
            description=planned.description,
            type=planned.type,
            priority=planned.priority,
            cycle_id=cycle_id,
            max_attempts=ctx.config.max_task_attempts,
        )
        if ctx.store.has_task(task.id):  # recorded before a crash: keep it
            accepted.append(ctx.store.get_task(task.id))
        elif task.fingerprint in failed:
            rejected.append(f"{planned.title}: repeats a failed task as is")
        elif task.fingerprint in seen:
            rejected.append(f"{planned.title}: duplicates an open or finished task")
        elif len(accepted) >= max_tasks:
            rejected.append(f"{planned.title}: over the limit of {max_tasks} task(s)")
        else:
            accepted.append(task)
            seen.add(task.fingerprint)
    return accepted, rejected


async def plan(ctx: ProjectContext, cycle_id: str, base_commit: str) -> Plan:
    """Run the planner when there is room for tasks; otherwise plan nothing."""
    slots = open_slots(ctx)
    if slots == 0 or ctx.config.backlog_source == "manual":
        return Plan(cycle_id=cycle_id, ran_planner=False)
    root = ctx.base_worktree(cycle_id, base_commit)
    prompt = build_prompt(ctx, root, slots)
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
        session_id=run.session_id,
    )
