"""Retention: what finished cycles leave behind goes after ``retention_days``.

A cycle leaves agent transcripts (the CLI's, one file per session), Prefect's
persisted step results, audit files under ``.orch/`` and its Prefect flow run.
Once the cycle ended more than ``retention_days`` ago they go, except what
something still open may need:

- sessions of tasks not yet done or failed (a pending task resumes its session,
  one in review has an open pull request), and every session of a cycle that
  is running or waits for approval (those cycles never count as finished);
- step results newer than the oldest unfinished cycle of the portfolio (a
  resumed cycle replays its finished steps from them);
- the audit files of tasks not yet done or failed.

Worktrees and branches nobody holds are the patrol's (see
:mod:`orchestrator.stages.patrol`); flow runs are the Prefect layer's
(``tasks/patrol.py`` and ``orch gc``). Everything here is plain files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator.adapters.agent import effective_config_dir
from orchestrator.adapters.store import Store
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.models import TaskStatus
from orchestrator.stages.context import ProjectContext

FINISHED = (TaskStatus.done, TaskStatus.failed)


class Garbage(BaseModel):
    """What retention removes (or, on a dry run, would remove)."""

    cutoff: str = ""
    """Leftovers of cycles that ended before this (ISO, UTC) go; '' when the project keeps everything."""
    transcripts: list[Path] = Field(default_factory=list)
    audit_files: list[Path] = Field(default_factory=list)
    results: list[Path] = Field(default_factory=list)
    done_through: str = ""
    """Once removed, nothing of the cycles that finished until then is left to collect (see
    ``ProjectState.collected_through``); '' when that did not move."""

    def paths(self) -> list[Path]:
        return [*self.transcripts, *self.audit_files, *self.results]

    def size(self) -> int:
        """Bytes the files take."""
        return sum(_size(p) for p in self.paths())


def cutoff(ctx: ProjectContext, now: datetime) -> datetime | None:
    """Leftovers of cycles that ended before this go; None when the project keeps everything."""
    days = ctx.portfolio.retention_for(ctx.config)
    return now - timedelta(days=days) if days else None


def project_garbage(ctx: ProjectContext, now: datetime) -> Garbage:
    """What of ``ctx``'s project is past its retention: transcripts and audit files.

    Only cycles that finished since the last collection are looked at, so the
    work stays small however long the project has run. A cycle with a session
    kept for an open task stops the mark there, to be looked at again later.
    """
    before = cutoff(ctx, now)
    if before is None:
        return Garbage()
    state, tasks = ctx.store.state(), ctx.store.list_tasks()
    old = ctx.store.cycles_finished_between(state.collected_through or "", before.isoformat())
    open_tasks = {t.id for t in tasks if t.status not in FINISHED}
    sessions_by_cycle: dict[str, list[tuple[str, str]]] = {}
    for cycle_id, session, task in ctx.store.sessions_of(c.id for c in old):
        sessions_by_cycle.setdefault(cycle_id, []).append((session, task))
    sessions, done_through, held = [], "", False
    for found in old:
        mine = sessions_by_cycle.get(found.id, [])
        sessions += [sid for sid, task in mine if task not in open_tasks]
        held = held or any(task in open_tasks for _, task in mine)
        if not held and found.finished_at:
            done_through = found.finished_at
    audit = [ctx.orch_dir / folder / f"cycle_{c.id}.md" for c in old for folder in ("plans", "merges")]
    audit += [ctx.orch_dir / folder / f"{t.id}.md" for t in tasks
              if t.status in FINISHED and t.updated_at < before.isoformat() for folder in ("workers", "verdicts")]
    return Garbage(
        cutoff=before.isoformat(timespec="seconds"),
        transcripts=_transcripts(effective_config_dir(ctx.claude_config_dir), sessions),
        audit_files=[p for p in audit if p.is_file()],
        done_through=done_through,
    )


def _transcripts(config_dir: Path, session_ids: Iterable[str]) -> list[Path]:
    """The CLI's files of these sessions: ``projects/<its cwd>/<id>.jsonl``, and a folder of the
    same name when the session kept more (its subagents' transcripts, tool results)."""
    projects = config_dir / "projects"
    if not projects.is_dir():
        return []
    wanted = set(session_ids)
    return sorted(p for folder in projects.iterdir() if folder.is_dir() for p in folder.iterdir()
                  if p.name.removesuffix(".jsonl") in wanted)


def garbage(ctx: ProjectContext, now: datetime) -> Garbage:
    """All that is past the project's retention, and the portfolio's step results past theirs."""
    found = project_garbage(ctx, now)
    found.results = results_garbage(ctx.portfolio, now)
    return found


def oldest_open_cycle(portfolio: PortfolioConfig) -> datetime | None:
    """When the earliest cycle still running or waiting for approval, in any project, started."""
    starts = []
    for project in portfolio.projects:
        if not (portfolio.data_dir / f"{project.name}.db").is_file():
            continue
        with closing(Store.for_project(portfolio.data_dir, project.name)) as store:
            starts += [c.started_at for c in store.running_cycles()]
            starts += [store.get_cycle(a.cycle_id).started_at for a in store.waiting_approvals()]
    return min(datetime.fromisoformat(s) for s in starts) if starts else None


def results_garbage(portfolio: PortfolioConfig, now: datetime) -> list[Path]:
    """Persisted step results older than every project's retention and than every open cycle.

    They are shared by the portfolio's projects and named by cache key, not by
    project, so their age is all there is to go by: the longest retention
    holds, and a project that keeps everything keeps them all.
    """
    days = [portfolio.retention_for(p) for p in portfolio.projects]
    results_dir = portfolio.results_dir
    if not days or 0 in days or not results_dir.is_dir():
        return []
    limit = now - timedelta(days=max(days))
    if (oldest := oldest_open_cycle(portfolio)) is not None:
        limit = min(limit, oldest)
    return sorted(p for p in results_dir.iterdir()
                  if p.is_file() and datetime.fromtimestamp(p.stat().st_mtime, limit.tzinfo) < limit)


def remove(garbage: Garbage, store: Store | None = None) -> None:
    """Delete what ``garbage`` lists (something already gone is fine), then note in ``store`` how far
    collection got."""
    for path in garbage.paths():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if store is not None and garbage.done_through:
        store.set_collected_through(garbage.done_through)


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
