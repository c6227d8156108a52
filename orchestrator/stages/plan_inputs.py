"""Whether the planner has anything new to read: a project with nothing to do costs nothing.

The planner is asked again only when what it reads differs from its last
plan, or ``replan_after_hours`` after it: main's commit (the context files
and a backlog file are committed there), the open GitHub issues, the open
tasks and their states, the recent failures, the recent cycles that merged
or rejected something, and the settings that shape its prompt. What it read
is kept as one digest in the project's state.

A scheduled run with no cycle to resume, no pending task and nothing new for
the planner ends right after its patrol and sync (which tidy up and learn
what GitHub says): no plan step, no agent, no worktree, no cycle recorded.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from orchestrator.adapters.github import GitHubError
from orchestrator.domain.models import TaskStatus
from orchestrator.stages.backlog import open_items
from orchestrator.stages.backlog_file import BacklogItem
from orchestrator.stages.context import ProjectContext

OPEN = (TaskStatus.pending, TaskStatus.in_progress, TaskStatus.in_review, TaskStatus.blocked)
HISTORY_CYCLES = 3  # finished cycles whose outcome the planner is shown


def digest(ctx: ProjectContext, base_commit: str, items: list[BacklogItem]) -> str:
    """What the planner reads from ``base_commit``, in 16 hex digits; ``items`` count for GitHub's issues only."""
    config = ctx.config
    outcomes = [c.id for c in ctx.store.list_cycles(limit=HISTORY_CYCLES + 20)
                if c.finished_at and c.summary and (c.summary.merged or c.summary.rejected)][:HISTORY_CYCLES]
    read = {
        "main": base_commit,
        "settings": [config.planner_context_files, config.backlog_source, config.backlog_file,
                     config.github_label, config.test_command, config.max_workers],
        # A backlog file is part of main's commit; GitHub's issues are not.
        "issues": [[i.id, i.title, i.body, list(i.depends_on)] for i in items]
        if config.backlog_source == "github_issues" else [],
        "open": sorted([t.id, t.status.value] for s in OPEN for t in ctx.store.list_tasks(s)),
        "failed": sorted([t.id, t.last_failure] for t in ctx.store.recent_failures()),
        "outcomes": outcomes,
    }
    return hashlib.sha256(json.dumps(read, sort_keys=True).encode()).hexdigest()[:16]


def unchanged(ctx: ProjectContext, inputs: str, now: datetime) -> str:
    """Why the planner need not be asked (nothing new since its last plan); '' when it must be."""
    state = ctx.store.state()
    if state.planned_inputs != inputs or not state.planned_at:
        return ""
    last = datetime.fromisoformat(state.planned_at)
    if now - last >= timedelta(hours=ctx.config.replan_after_hours):
        return ""
    return f"nothing new to plan since {last:%Y-%m-%d %H:%M} UTC"


def digest_now(ctx: ProjectContext) -> str:
    """The digest of what the planner would read now, from main (GitHubError if the issues cannot be read)."""
    # A backlog file is read from main's commit, which the digest holds.
    items = open_items(ctx, ctx.repo.path) if ctx.config.backlog_source == "github_issues" else []
    return digest(ctx, ctx.repo.head(), items)


def idle(ctx: ProjectContext) -> str:
    """Why a new cycle would do nothing (no cycle to resume, no pending task, nothing new to plan); '' otherwise."""
    if ctx.store.unfinished_cycle() is not None or ctx.store.count_by_status()[TaskStatus.pending.value]:
        return ""
    if ctx.config.backlog_source == "manual":
        return "nothing to do: no pending task (tasks come from `orch add-task`)"
    try:
        inputs = digest_now(ctx)
    except GitHubError:
        return ""  # the cycle says what failed
    return unchanged(ctx, inputs, ctx.services.clock())
