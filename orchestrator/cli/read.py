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
from orchestrator.cli.tables import Column, fit, short_time
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.errors import OrchestratorError
from orchestrator.domain.models import Task, TaskStatus

console = Console()

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Portfolio JSON file (default: $ORCH_CONFIG, ./orch.json, ./config/portfolio.json).")]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name from the portfolio.")]
OnlyProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Only this project (default: all).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column, however narrow the terminal.")]


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


def _fit(title: str, columns: list[Column], rows: list[list[str]], wide: bool) -> None:
    table, width, left_out = fit(title, columns, rows, console.width, wide)
    terminal = console.width
    console.width = max(width, terminal)  # wider than the terminal only with --wide
    try:
        console.print(table, crop=False)
    finally:
        console.width = terminal
    if left_out:
        console.print(f"[dim]Left out to fit {console.width} columns: {', '.join(left_out)} (--wide shows them).[/]",
                      highlight=False)


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


def status(config: ConfigOpt = None, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """Show every project: next run (or paused), tasks by status, last cycle, cost; then what holds each up."""
    portfolio = load_portfolio(config)
    rows = status_rows(portfolio, _next_runs(portfolio))
    if as_json:
        _print_json(rows)
        return
    _print_status(rows, f"Portfolio {portfolio.name}", wide)


def _print_status(rows: list[ProjectStatus], title: str, wide: bool) -> None:
    review = any(r.in_review for r in rows)  # pull requests: only where some project opens them
    columns = [Column("project", flex=True, least=10), Column("next"), Column("pending", right=True),
               Column("running", right=True), *([Column("in review", right=True)] if review else []),
               Column("done", right=True), Column("failed", right=True),
               Column("last cycle", flex=True, least=13),
               Column("cycle id", optional=1), Column("cost ($)", right=True)]
    table = []
    for r in rows:
        when = "paused" if r.paused else "off" if not r.enabled else short_time(r.next_run)
        last = f"{r.last_cycle_status} {short_time(r.last_cycle_at)}" if r.last_cycle_id else "-"
        table.append([r.project, when, str(r.pending), str(r.in_progress), *([str(r.in_review)] if review else []),
                      str(r.done), str(r.failed), last, r.last_cycle_id or "-", f"{r.cost_usd:.4f}"])
    _fit(title, columns, table, wide)
    for r in rows:  # what holds a project up, as sentences under the table
        for note in _status_notes(r):
            console.print(f"{escape(r.project)}: {escape(note)}", highlight=False)


def _status_notes(r: ProjectStatus) -> list[str]:
    notes = [f"paused: {r.paused_reason or 'by a user'}"] if r.paused else []
    notes += [f"{label}: {text}" for label, text in (
        ("merge waiting", r.merge_waiting), ("approval", r.approval), ("budget", r.budget_stop),
        ("agent cap", r.agent_cap), ("flaky on main", ", ".join(r.flaky_on_main))) if text]
    notes += [r.rate_limit] if r.rate_limit else []
    notes += [f"pull request {url}" for url in r.pull_requests]
    if r.found_work_at:
        notes.append(f"last found work {short_time(r.found_work_at)}")
    return notes


def tasks(project: ProjectOpt, config: ConfigOpt = None,
          status: Annotated[TaskStatus | None, typer.Option("--status", "-s", help="Only tasks with this status.")] = None,
          limit: Annotated[int, typer.Option("--limit", "-n", min=0, help="How many tasks to show (0: all).")] = 50,
          as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """List a project's tasks: in progress, then pending, failed and done, each by priority."""
    with open_store(load_portfolio(config), project) as store:
        items = store.tasks_page(status, limit)
        counts = store.count_by_status()
        waits = [waits_for(store, t) for t in items]
    total = counts[status.value] if status else sum(counts.values())
    if as_json:
        _print_json(items)
        return
    _print_tasks(items, waits, f"Tasks of {project}", wide)
    if len(items) < total:
        console.print(f"Showing {len(items)} of {total:,} tasks (--limit 0 shows all, --status one status).")


def _print_tasks(items: list[Task], waits: list[str], title: str, wide: bool) -> None:
    # The link, waits and failure columns only when some task has one.
    links = [" ".join(x for x in (t.backlog_item, t.pr_url) if x) for t in items]
    failures = [t.last_failure for t in items]
    columns = [Column("id"), Column("status"), Column("type", optional=3), Column("pri", right=True, optional=2),
               Column("tries", right=True), Column("title", flex=True)]
    extra = [(Column("link", flex=True, optional=4), links), (Column("waits for", flex=True), waits),
             (Column("last failure", flex=True, optional=1), failures)]
    shown = [(column, cells) for column, cells in extra if any(cells)]
    rows = [[t.id, t.status.value, t.type.value, str(t.priority), f"{t.attempts}/{t.max_attempts}", t.title,
             *(cells[n] or "-" for _, cells in shown)] for n, t in enumerate(items)]
    _fit(title, columns + [column for column, _ in shown], rows, wide)


def cycles(project: OnlyProjectOpt = None, config: ConfigOpt = None,
           limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many cycles to show.")] = 20,
           as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """List recent cycles of every project, or of one, newest first."""
    rows = cycle_rows(load_portfolio(config), project, limit)
    if as_json:
        _print_json(rows)
        return
    _print_cycles(rows, f"Cycles of {project}" if project else "Recent cycles", wide)


def _print_cycles(rows: list[CycleRow], title: str, wide: bool) -> None:
    columns = [Column("cycle"), Column("project", flex=True), Column("status"), Column("started"),
               Column("finished", optional=3), Column("took", right=True), Column("planned", right=True, optional=2),
               Column("merged", right=True), Column("rejected", right=True, optional=1),
               Column("cost ($)", right=True)]
    _fit(title, columns, [[r.cycle_id, r.project, r.status, short_time(r.started_at), short_time(r.finished_at),
                           _duration(r.duration_s), str(r.planned), str(r.merged), str(r.rejected),
                           f"{r.cost_usd:.4f}"] for r in rows], wide)
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
    for task in story.tasks:
        _print_story_task(task)
    _fit("Cost", [Column("role"), Column("model", flex=True), Column("sessions", right=True),
                  Column("cost ($)", right=True)],
         [[line.role, line.model, str(line.sessions), f"{line.cost_usd:.4f}"] for line in story.costs], False)
    console.print(f"total ${story.total_cost_usd:.4f}", highlight=False)


def _print_story_task(t: TaskStory) -> None:
    """A task's work, verdict and merge, a line each: the long text folds here, it is the place for it."""
    work, verdict = t.work, t.verdict
    console.print(f"\n[bold]{t.task_id}[/] {escape(t.title)}", highlight=False)
    lines = []
    if work is None:
        lines.append("worker: did not run")
    else:
        said = f"ok: {work.summary}" if work.success else f"failed: {work.error}"
        lines.append(f"worker {_short(said, 300)}")
        # git's --stat ends with the totals line ("1 file changed, ...").
        if work.diff_stat.strip():
            lines.append(f"diff {escape(work.diff_stat.strip().splitlines()[-1].strip())}")
    if verdict is not None:
        judged = "passed" if verdict.passed else "rejected"
        if verdict.flaky_tests:
            judged += f" (flaky: {escape(', '.join(verdict.flaky_tests))})"
        reasons = _short("; ".join(verdict.reasons), 300)
        lines.append(f"verdict {judged}" + (f": {reasons}" if reasons else ""))
    merged = "not merged"
    if t.merged:
        merged = "merged " + (t.merge_commit or "")[:12] + (" (resolved a conflict)" if t.resolved_conflict else "")
    cost = (work.cost_usd if work else 0.0) + (verdict.cost_usd if verdict else 0.0)
    lines.append(f"{merged}, cost ${cost:.4f}")
    for line in lines:
        console.print(f"  {line}", highlight=False)


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
        _fit(f"Cost{scope} by {dimension}", [Column(dimension, flex=True), Column("sessions", right=True),
                                             Column("cost ($)", right=True)],
             [[group.key, str(group.sessions), f"{group.cost_usd:.4f}"] for group in groups], False)
    console.print(f"Total{scope}: ${report.total_cost_usd:.4f} over {report.sessions} agent sessions",
                  highlight=False)
