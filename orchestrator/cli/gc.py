"""``orch gc``: remove what finished cycles left behind, past ``retention_days``.

The patrol does the same at the start of every cycle; this command is for a
data dir nobody runs cycles on, or to see what would go (``--dry-run``). A
project whose cycle is running is skipped: its lock is held. main.py
registers the command.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from deployments.server import running_server
from orchestrator.adapters.lock import CycleLock
from orchestrator.adapters.portfolio_file import find_config, load_portfolio
from orchestrator.cli.read import ConfigOpt, OnlyProjectOpt

console = Console()


def gc(config: ConfigOpt = None, project: OnlyProjectOpt = None,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")] = False) -> None:
    """Remove finished cycles' transcripts, step results, audit files and Prefect runs past retention_days."""
    # Imported here: through the project context they import the agent SDK, which every
    # other command (orch status, orch tasks) would pay for at start-up.
    from orchestrator.stages import retention
    from orchestrator.stages.context import ProjectContext, ProjectRef

    path = find_config(config).resolve()
    portfolio = load_portfolio(path)
    names = [portfolio.project(project).name] if project else [p.name for p in portfolio.projects]
    now = datetime.now(UTC)
    verb = "Would remove" if dry_run else "Removed"
    server = running_server(portfolio.data_dir)  # the Prefect runs are asked for only where one is up
    for name in names:
        lock = CycleLock(portfolio.data_dir, name)
        if not lock.acquire(False):
            console.print(f"{name}: skipped, a cycle of it is running ({escape(lock.holder())})")
            continue
        try:
            with ProjectContext.open(ProjectRef(project=name, config_path=str(path))) as ctx:
                found = retention.project_garbage(ctx, now)
                if not found.cutoff:
                    console.print(f"{name}: keeps everything (retention_days is 0)")
                    continue
                runs = _old_runs(server, name, datetime.fromisoformat(found.cutoff), delete=not dry_run)
                console.print(f"{name}: {verb.lower()} what cycles that ended before {found.cutoff[:16]} UTC left: "
                              f"{len(found.transcripts)} transcripts, {len(found.audit_files)} audit files, "
                              f"{runs} Prefect runs ({_mib(found.size())})")
                if not dry_run:
                    retention.remove(found, ctx.store)
        finally:
            lock.release()
    results = retention.Garbage(results=retention.results_garbage(portfolio, now))
    console.print(f"{verb} {len(results.results)} step results of the portfolio ({_mib(results.size())})")
    if not dry_run:
        retention.remove(results)


def _old_runs(server: str | None, project: str, before: datetime, delete: bool) -> str:
    """How many of the project's flow runs ended before ``before`` (deleted unless told not to)."""
    import anyio

    from deployments import control
    from tasks.runs import delete_runs, old_runs

    if server is None:
        return "no server to ask about"
    with control.api(server):
        runs = anyio.run(old_runs, project, before)
        if delete:
            anyio.run(delete_runs, runs)
    return str(len(runs))


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
