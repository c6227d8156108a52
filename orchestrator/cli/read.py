"""The read commands of ``orch``: status, tasks, cycles, show and costs.

Each loads the portfolio, asks :mod:`orchestrator.cli.reports` for plain data and
renders it as Rich tables, or with ``--json`` as one JSON document on stdout
for scripts. Only ``status`` asks Prefect anything: the next scheduled runs,
when a Prefect server is up.
main.py registers these functions as commands.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.cli.reports import (
    CostDimension,
    CostReport,
    CycleRow,
    CycleStory,
    ProjectStatus,
    TaskStory,
    cost_report,
    cycle_rows,
    cycle_story,
    open_store,
    status_rows,
    waits_for,
)
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.errors import OrchestratorError
from orchestrator.domain.models import Task, TaskStatus

console = Console()

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Portfolio JSON file (default: $ORCH_CONFIG, ./orch.json, ./config/portfolio.json).")]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name from the portfolio.")]
OnlyProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Only this project (default: all).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]


def _print_json(data: Any) -> None:
    # Plain stdout, not the Rich console: no markup, colour or wrapping in the way of a parser.
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    typer.echo(json.dumps(data, indent=2))


def _time(iso: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM`` in UTC, or ``-``."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02}m" if hours else f"{minutes}m {secs:02}s" if minutes else f"{secs}s"


def _short(text: str, limit: int = 80) -> str:
    """One line of at most ``limit`` characters, escaped for Rich markup."""
    line = " ".join(text.split())
    return escape(line[:limit] + "..." if len(line) > limit else line)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _next_runs(portfolio: PortfolioConfig) -> dict[str, datetime]:
    """Next scheduled run per project, from a running Prefect server; empty without one."""
    from deployments.server import running_server

    url = running_server(portfolio.data_dir)
    if url is None:  # nothing schedules runs, and status must not start a server to say so
        return {}
    from deployments.control import next_runs

    try:
        return next_runs(url, [p.name for p in portfolio.projects])
    except OrchestratorError as exc:  # the store's view is still worth showing
        # On stderr: --json output stays one document.
        Console(stderr=True).print(f"[yellow]Next runs unknown:[/] {escape(str(exc))}", soft_wrap=True)
        return {}


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show every project: enabled, paused, next run, tasks by status, last cycle, cost."""
    portfolio = load_portfolio(config)
    rows = status_rows(portfolio, _next_runs(portfolio))
    if as_json:
        _print_json(rows)
        return
    _print_status(rows, f"Portfolio {portfolio.name}")


def _print_status(rows: list[ProjectStatus], title: str) -> None:
    table = _table(title, "project", "enabled", "paused", "next run (UTC)", "pending",
                   "in progress", "in review", "done", "failed", "last cycle", "cost ($)")
    for r in rows:
        paused = f"yes: {escape(r.paused_reason)}" if r.paused else "no"
        last = f"{r.last_cycle_id} {r.last_cycle_status} {_time(r.last_cycle_at)}" if r.last_cycle_id else "-"
        if r.merge_waiting:
            last += f"\nmerge waiting: {escape(r.merge_waiting)}"
        if r.approval:
            last += f"\napproval: {escape(r.approval)}"
        if r.budget_stop:
            last += f"\nbudget: {escape(r.budget_stop)}"
        if r.rate_limit:
            last += f"\n{escape(r.rate_limit)}"
        if r.agent_cap:
            last += f"\nagent cap: {escape(r.agent_cap)}"
        if r.flaky_on_main:
            last += f"\nflaky on main: {escape(', '.join(r.flaky_on_main))}"
        review = "\n".join([str(r.in_review), *r.pull_requests])
        table.add_row(r.project, "yes" if r.enabled else "no", paused, _time(r.next_run),
                      str(r.pending), str(r.in_progress), review, str(r.done), str(r.failed), last,
                      f"{r.cost_usd:.4f}")
    console.print(table)


def tasks(project: ProjectOpt, config: ConfigOpt = None,
          status: Annotated[TaskStatus | None, typer.Option("--status", "-s", help="Only tasks with this status.")] = None,
          limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="How many tasks to show (0: all).")] = 50,
          as_json: JsonOpt = False) -> None:
    """List a project's tasks: in progress, then pending, failed and done, each by priority."""
    with open_store(load_portfolio(config), project) as store:
        items = store.tasks_page(status, limit)
        counts = store.count_by_status()
        waits = [waits_for(store, t) for t in items]
    total = counts[status.value] if status else sum(counts.values())
    if as_json:
        _print_json(items)
        return
    _print_tasks(items, waits, f"Tasks of {project}")
    if len(items) < total:
        console.print(f"Showing {len(items)} of {total:,} tasks (--limit 0 shows all, --status one status).")


def _print_tasks(items: list[Task], waits: list[str], title: str) -> None:
    # The link and waits columns only when some task has one: narrow terminals.
    links = [" ".join(x for x in (t.backlog_item, t.pr_url) if x) for t in items]
    columns = (["id", "status", "type", "pri", "tries", "title"] + (["link"] if any(links) else [])
               + (["waits for"] if any(waits) else []) + ["last failure"])
    table = _table(title, *columns)
    for t, link, wait in zip(items, links, waits, strict=True):
        cells = [t.id, t.status.value, t.type.value, str(t.priority), f"{t.attempts}/{t.max_attempts}", escape(t.title)]
        table.add_row(*cells, *([escape(link or "-")] if any(links) else []),
                      *([wait or "-"] if any(waits) else []), _short(t.last_failure))
    console.print(table)


def cycles(project: OnlyProjectOpt = None, config: ConfigOpt = None,
           limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many cycles to show.")] = 20,
           as_json: JsonOpt = False) -> None:
    """List recent cycles of every project, or of one, newest first."""
    rows = cycle_rows(load_portfolio(config), project, limit)
    if as_json:
        _print_json(rows)
        return
    _print_cycles(rows, f"Cycles of {project}" if project else "Recent cycles")


def _print_cycles(rows: list[CycleRow], title: str) -> None:
    table = _table(title, "project", "cycle", "status", "started (UTC)", "finished (UTC)",
                   "took", "planned", "merged", "rejected", "cost ($)")
    for r in rows:
        table.add_row(r.project, r.cycle_id, r.status, _time(r.started_at), _time(r.finished_at),
                      _duration(r.duration_s), str(r.planned), str(r.merged), str(r.rejected),
                      f"{r.cost_usd:.4f}")
    console.print(table)
    if not rows:
        console.print("No cycles yet: `orch run --project P` starts one.")


def show(cycle: Annotated[str, typer.Argument(help="Cycle id, or the start of one (see `orch cycles`).")],
         project: OnlyProjectOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Tell the story of one cycle: plan, each task's work, verdict and merge, costs."""
    story = cycle_story(load_portfolio(config), cycle, project)
    if as_json:
        _print_json(story)
        return
    _print_story(story)


def _print_story(story: CycleStory) -> None:
    console.print(f"[bold]Cycle {story.cycle_id}[/] of {story.project}: {story.status}", highlight=False)
    console.print(f"base {story.base_commit[:12]}, started {_time(story.started_at)}, finished "
                  f"{_time(story.finished_at)} UTC, took {_duration(story.duration_s)}", highlight=False)
    if story.message:
        console.print(escape(story.message), highlight=False)
    console.print(f"\n[bold]Plan[/]: {escape(story.plan_path) or 'the planner did not run'}", highlight=False)
    for item in story.planned:
        after = f", after {', '.join(item.depends_on)}" if item.depends_on else ""
        console.print(f"  - {escape(item.title)} ({item.task_id}{after})", highlight=False)
    if story.plan_path and not story.planned:
        console.print("  no new tasks")
    _print_story_tasks(story.tasks)
    table = _table("Cost", "role", "model", "sessions", "cost ($)")
    for line in story.costs:
        table.add_row(line.role, line.model, str(line.sessions), f"{line.cost_usd:.4f}")
    console.print(table)
    console.print(f"total ${story.total_cost_usd:.4f}", highlight=False)


def _print_story_tasks(items: list[TaskStory]) -> None:
    table = _table("Tasks", "task", "title", "worker", "summary or error", "diff", "verdict",
                   "reasons", "merged", "cost ($)")
    for t in items:
        table.add_row(*_story_cells(t))
    console.print(table)


def _story_cells(t: TaskStory) -> list[str]:
    work, verdict = t.work, t.verdict
    worker, said, diff = "-", "", "-"
    if work is not None:
        worker, said = ("ok", work.summary) if work.success else ("failed", work.error)
        # git's --stat ends with the totals line ("1 file changed, ...").
        diff = work.diff_stat.strip().splitlines()[-1].strip() if work.diff_stat.strip() else "-"
    judged = "-" if verdict is None else "passed" if verdict.passed else "rejected"
    if verdict and verdict.flaky_tests:
        judged += f" (flaky: {escape(', '.join(verdict.flaky_tests))})"
    merged = "no"
    if t.merged:
        merged = (t.merge_commit or "")[:12] + (" (resolved)" if t.resolved_conflict else "")
    cost = (work.cost_usd if work else 0.0) + (verdict.cost_usd if verdict else 0.0)
    return [t.task_id, escape(t.title), worker, _short(said, 160), escape(diff), judged,
            _short("; ".join(verdict.reasons) if verdict else "", 160), merged, f"{cost:.4f}"]


def costs(config: ConfigOpt = None, project: OnlyProjectOpt = None,
          by: Annotated[CostDimension | None, typer.Option("--by", help="One grouping (default: all four).")] = None,
          as_json: JsonOpt = False) -> None:
    """Show what the agents cost, by project, role, model and day."""
    report = cost_report(load_portfolio(config), by, project)
    if as_json:
        _print_json(report)
        return
    _print_costs(report)


def _print_costs(report: CostReport) -> None:
    scope = f" of {report.project}" if report.project else ""
    for dimension, groups in report.groups.items():
        table = _table(f"Cost{scope} by {dimension}", dimension, "sessions", "cost ($)")
        for group in groups:
            table.add_row(escape(group.key), str(group.sessions), f"{group.cost_usd:.4f}")
        console.print(table)
    console.print(f"Total{scope}: ${report.total_cost_usd:.4f} over {report.sessions} agent sessions",
                  highlight=False)
