"""Where work comes from (``backlog_source``) and what an item's merge does to it.

- ``claude_md``: the planner reads the context files; items are not tracked.
- ``backlog_file``: a markdown checklist or JSON list in the project
  (:mod:`.backlog_file`). An item is ticked in the merge commit of its task,
  so the tick reaches main through the same tested merge as the work.
- ``github_issues``: open issues with ``github_label``. When the task merges,
  the issue gets a comment linking the commit and is closed or labelled.
- ``manual``: only tasks added with ``orch add-task``; no planner runs.

A planned task names the item it does (``backlog_item``): ``#12`` for an
issue, the item's id for a backlog file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from orchestrator.adapters.git_repo import GitRepo
from orchestrator.adapters.github import GitHub, GitHubError, repo_from_remote
from orchestrator.adapters.prompts import untrusted
from orchestrator.domain.config import ProjectConfig
from orchestrator.domain.errors import ConfigError
from orchestrator.domain.models import Task, TaskStatus
from orchestrator.stages.backlog_file import BacklogError, BacklogItem, parse_backlog, tick
from orchestrator.stages.context import ProjectContext

logger = logging.getLogger(__name__)
BODY_LIMIT = 1500  # characters of an item's body shown to the planner


def github(ctx: ProjectContext) -> GitHub:
    """A client for the project's GitHub repository (``github_repo`` or the ``origin`` remote)."""
    return github_for(ctx.config, ctx.repo)


def github_for(c: ProjectConfig, repo: GitRepo) -> GitHub:
    """:func:`github` from a project's config and repository."""
    name = c.github_repo
    if name is None:
        url = repo.remote_url("origin")
        name = repo_from_remote(url) if url else None
        if name is None:
            raise ConfigError(
                f"project {c.name!r}: github_repo is not set and the origin remote ({url or 'none'}) "
                "does not name a GitHub repository; set github_repo to 'owner/name'"
            )
    return GitHub(name, os.environ.get(c.github_token_env), c.github_api_url, token_env=c.github_token_env)


def check_github(c: ProjectConfig, repo: GitRepo) -> None:
    """Before anything is written or paid for: a project that needs GitHub can use it (ConfigError if not)."""
    if c.backlog_source != "github_issues" and c.merge_strategy != "pr":
        return
    if not os.environ.get(c.github_token_env):
        needs = "backlog_source 'github_issues'" if c.backlog_source == "github_issues" else "merge_strategy 'pr'"
        raise ConfigError(f"project {c.name!r}: {needs} needs a GitHub token in ${c.github_token_env}; "
                          "set it (or github_token_env)")
    github_for(c, repo).close()  # the repository can be named
    if c.merge_strategy == "pr" and not repo.has_remote("origin"):
        raise ConfigError(f"project {c.name!r}: merge_strategy 'pr' pushes branches to the origin remote, "
                          "and the repository has none; add it with `git remote add origin URL`")


def open_items(ctx: ProjectContext, root: Path) -> list[BacklogItem]:
    """The backlog's open items as committed in ``root`` (a checkout of the cycle's base)."""
    source = ctx.config.backlog_source
    if source == "backlog_file":
        name = ctx.config.backlog_file or ""
        path = root / name
        if not path.is_file():
            # The planner reads main as committed, not the user's working files.
            raise ConfigError(
                f"project {ctx.name!r}: backlog_file {name!r} is not committed on {ctx.repo.main}; "
                "commit it or fix the config"
            )
        items = parse_backlog(path.read_text(encoding="utf-8"), name)
        done = {i.id for i in items if i.done}  # waiting for a done item is waiting for nothing
        return [replace(i, depends_on=tuple(d for d in i.depends_on if d not in done)) for i in items if not i.done]
    if source == "github_issues":
        with github(ctx) as gh:
            issues = gh.open_issues(ctx.config.github_label)
        return [BacklogItem(id=f"#{i.number}", title=i.title, body=i.body, done=False) for i in issues]
    return []


def backlog_text(ctx: ProjectContext, items: list[BacklogItem]) -> str:
    """The backlog section of the planner's prompt.

    Each item's id and state are the orchestrator's words; its title and body,
    written by whoever filed it, follow in an untrusted-data block.
    """
    source = ctx.config.backlog_source
    if source == "claude_md":
        return "The context files above are the backlog."
    github = source == "github_issues"
    where = f"open GitHub issues labelled `{ctx.config.github_label}`" if github else f"`{ctx.config.backlog_file}`"
    if not items:
        return f"The backlog ({where}) has no open item."
    lines = [f"Open items of the backlog ({where}), each an id line then its title and text. Give each "
             "task the `backlog_item` id of the item it does; an item too big for one task gets only its "
             "first piece. An item marked (after ...) waits for those items: its task waits for theirs "
             "by itself.", ""]
    for item in items:
        taken = [t for t in ctx.store.linked_tasks(item.id) if t.status is not TaskStatus.failed]
        note = f" (already a task: {taken[0].status.value})" if taken else ""
        if item.depends_on:
            note += " (after " + ", ".join(f"`{d}`" for d in item.depends_on) + ")"
        body = item.body.strip()
        shown = body if len(body) <= BODY_LIMIT else body[:BODY_LIMIT] + " [truncated]"
        origin = f"GitHub issue {item.id}" if github else f"item {item.id} of {ctx.config.backlog_file}"
        lines += [f"- `{item.id}`{note}", untrusted(f"{item.title}\n\n{shown}".strip(), origin), ""]
    return "\n".join(lines).rstrip("\n")


def tick_item(ctx: ProjectContext, worktree: Path, task: Task) -> bool:
    """Tick the task's item in the backlog file of ``worktree``; True if the file changed.

    An item no longer in the file (edited or removed by someone) is left alone.
    """
    name = ctx.config.backlog_file
    if ctx.config.backlog_source != "backlog_file" or not name or not task.backlog_item:
        return False
    path = worktree / name
    try:
        text = path.read_text(encoding="utf-8")
        ticked = tick(text, name, task.backlog_item)
    except (OSError, BacklogError) as exc:
        logger.warning("Could not tick backlog item %s of task %s: %s", task.backlog_item, task.id, exc)
        return False
    if ticked == text:
        return False
    path.write_text(ticked, encoding="utf-8")
    return True


def commit_link(ctx: ProjectContext, gh: GitHub, commit: str) -> str:
    """A web link to ``commit`` in the GitHub repository."""
    api = ctx.config.github_api_url.rstrip("/")
    web = "https://github.com" if api == "https://api.github.com" else api.removesuffix("/api/v3")
    return f"{web}/{gh.repo}/commit/{commit}"


def sync_done(ctx: ProjectContext) -> list[str]:
    """Close (or label) the issues of merged tasks; returns the items handled.

    Never raises: GitHub being down must not fail a cycle. An issue that
    could not be updated is tried again after the next cycle.
    """
    pending = ctx.store.unsynced_backlog()
    issues = [t for t in pending if (t.backlog_item or "").startswith("#")]
    for task in pending:
        if task not in issues:  # a backlog file's tick rode in the merge itself
            ctx.store.update_task(task.id, backlog_done=True)
    done = [t.backlog_item or "" for t in pending if t not in issues]
    if not issues:
        return done
    try:
        with github(ctx) as gh:
            for task in issues:
                _close_issue(ctx, gh, task)
                done.append(task.backlog_item or "")
    except (GitHubError, ConfigError) as exc:
        logger.warning("Could not update the GitHub issues of merged tasks (tried again next cycle): %s", exc)
    return done


def _close_issue(ctx: ProjectContext, gh: GitHub, task: Task) -> None:
    number = int((task.backlog_item or "#0").lstrip("#"))
    commit = task.merge_commit or ""
    where = f"pull request {task.pr_url}, " if task.pr_url else ""
    gh.comment(number, f"Done by the orchestrator in {where}commit {commit_link(ctx, gh, commit)} "
                       f"(task `{task.id}`: {task.title}).")
    if ctx.config.github_on_merge == "label":
        gh.add_labels(number, [ctx.config.github_done_label])
    else:
        gh.close_issue(number)
    ctx.store.update_task(task.id, backlog_done=True)
