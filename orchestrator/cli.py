"""The ``orch`` command line.

Read commands open only the config and SQLite, never Prefect, so they answer
at once. Errors print one ``Error: ...`` line and exit 1; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import OrchestratorError
from .models import CycleSummary, Task, TaskStatus, TaskType

app = typer.Typer(
    help="Plan, work, judge and merge with Claude Code agents, on Prefect.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console()
_debug = False

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Portfolio JSON file (default: $ORCH_CONFIG, ./orch.json, ./config/portfolio.json).")]
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="Project name from the portfolio.")]


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    global _debug
    _debug = debug


def _prepare_prefect() -> None:
    # Prefect's telemetry write is what raises "database is locked" on SQLite.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _store(project: str, config: str | None):
    from .config import load_portfolio
    from .store import Store

    portfolio = load_portfolio(config)
    project_config = portfolio.project(project)
    return Store.for_project(portfolio.data_dir, project_config.name)


def run_cycle(project: str, config: str | None) -> CycleSummary:
    """One cycle of ``project`` through the ``project-cycle`` flow."""
    _prepare_prefect()
    from flows.project_cycle import project_cycle

    return asyncio.run(project_cycle(project=project, config=config))


@app.command()
def run(project: ProjectOpt, config: ConfigOpt = None,
        cycles: Annotated[int, typer.Option(min=1, help="How many cycles to run one after another.")] = 1) -> None:
    """Run one or more cycles of a project now."""
    for _ in range(cycles):
        summary = run_cycle(project, config)
        print_summary(summary)
        if summary.status == "skipped":
            break


@app.command()
def demo(directory: Annotated[Path | None, typer.Option("--dir", help="Where to create the sample project (default: a new temporary folder).")] = None,
         latency: Annotated[float, typer.Option(help="Scripted model latency per response, in seconds.")] = 0.0) -> None:
    """Run one full cycle offline on a sample project with the scripted model."""
    from .demo import demo_scenario, make_sample_project, write_portfolio
    from .scripted import ScriptedModel

    root = (directory or Path(tempfile.mkdtemp(prefix="orch-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    project_path = make_sample_project(root)
    config = write_portfolio(root, project_path)
    console.print(f"Sample project: [bold]{project_path}[/] (3 backlog items, tests with unittest)")
    with ScriptedModel(demo_scenario(latency)) as model:
        os.environ.update(model.env())
        os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
        console.print(f"Scripted model on {model.url}; running one cycle through Prefect...")
        summary = run_cycle("calc", str(config))
    print_summary(summary)
    _print_tasks(_store("calc", str(config)).list_tasks(), "Tasks after the cycle")
    console.print(f"\nAudit trail: {project_path / '.orch'}\nDatabase:    {root / 'data' / 'calc.db'}\nConfig:      {config}")
    console.print(f"Try: orch tasks --project calc --config {config}")


@app.command()
def status(config: ConfigOpt = None) -> None:
    """Show every project: enabled, paused, tasks by status, last cycle, cost."""
    from .config import load_portfolio
    from .store import Store

    portfolio = load_portfolio(config)
    table = Table(title=f"Portfolio {portfolio.name}")
    for column in ("project", "enabled", "paused", "pending", "in progress", "done", "failed", "last cycle", "cost ($)"):
        table.add_column(column)
    for project in portfolio.projects:
        store = Store.for_project(portfolio.data_dir, project.name)
        counts, state = store.count_by_status(), store.state()
        paused = f"yes: {state['paused_reason']}" if state["paused"] else "no"
        table.add_row(
            project.name, "yes" if project.enabled else "no", paused, str(counts["pending"]),
            str(counts["in_progress"]), str(counts["done"]), str(counts["failed"]),
            state["last_cycle_at"] or "-", f"{store.total_cost():.4f}",
        )
    console.print(table)


@app.command()
def tasks(project: ProjectOpt, config: ConfigOpt = None,
          status: Annotated[TaskStatus | None, typer.Option("--status", "-s", help="Only tasks with this status.")] = None) -> None:
    """List a project's tasks."""
    _print_tasks(_store(project, config).list_tasks(status), f"Tasks of {project}")


@app.command("add-task")
def add_task(project: ProjectOpt, title: Annotated[str, typer.Option(help="Short title.")],
             desc: Annotated[str, typer.Option("--desc", help="What to do, self-contained.")] = "",
             type: Annotated[TaskType, typer.Option("--type", help="Task type.")] = TaskType.code,
             priority: Annotated[int, typer.Option(min=1, max=5, help="1 is most urgent.")] = 3,
             config: ConfigOpt = None) -> None:
    """Add a task by hand; the next cycle works on it."""
    from .config import load_portfolio

    if not title.strip():
        raise OrchestratorError("--title must not be empty")
    store = _store(project, config)
    attempts = load_portfolio(config).project(project).max_task_attempts
    task = store.add_task(Task(title=title.strip(), description=desc or title, type=type,
                               priority=priority, source="manual", max_attempts=attempts))
    console.print(f"Added task [bold]{task.id}[/]: {task.title}")


@app.command()
def pause(project: ProjectOpt, config: ConfigOpt = None,
          reason: Annotated[str, typer.Option(help="Shown in status.")] = "paused by a user") -> None:
    """Pause a project: its cycles do nothing until resumed."""
    _store(project, config).set_paused(True, reason)
    console.print(f"Paused {project}.")


@app.command()
def resume(project: ProjectOpt, config: ConfigOpt = None) -> None:
    """Resume a paused project."""
    _store(project, config).set_paused(False)
    console.print(f"Resumed {project}.")


def _print_tasks(items: list[Task], title: str) -> None:
    table = Table(title=title)
    for column in ("id", "status", "type", "pri", "tries", "title", "last failure"):
        table.add_column(column, overflow="fold")
    for t in items:
        table.add_row(t.id, t.status.value, t.type.value, str(t.priority), f"{t.attempts}/{t.max_attempts}",
                      t.title, (t.last_failure[:80] + "...") if len(t.last_failure) > 80 else t.last_failure)
    console.print(table)


def print_summary(summary: CycleSummary) -> None:
    """What a cycle did, for people."""
    if summary.status == "skipped":
        console.print(summary.message)
        return
    console.print(f"\n[bold]Cycle {summary.cycle_id}[/] of {summary.project}: {summary.status}")
    console.print(f"planned {len(summary.planned)}, worked {len(summary.worked)}, passed {len(summary.passed)}, merged {len(summary.merged)}")
    for task_id, why in summary.rejected.items():
        console.print(f"  [red]not merged[/] {task_id}: {why[:160]}")
    costs = ", ".join(f"{role} ${cost:.4f}" for role, cost in sorted(summary.cost_by_role.items()))
    console.print(f"cost: {costs or 'none'} (total ${summary.total_cost_usd:.4f})")


def main() -> None:
    """Entry point: click reports usage errors; ours become one ``Error:`` line."""
    try:
        app()
    except OrchestratorError as exc:
        if _debug:
            raise
        console.print(f"[red]Error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
