"""The ``orch`` commands that run the portfolio through a Prefect server.

``start`` serves every enabled project's deployment on its schedule in this
process; ``deploy`` registers them to a work pool for ``prefect worker
start``; ``pause`` and ``resume`` set the store's flag and, when a server is
reachable, the deployment's schedule.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.adapters.store import Store, is_paused
from orchestrator.cli.read import ConfigOpt, ProjectOpt
from orchestrator.cli.tables import Column, fit
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.errors import OrchestratorError

console = Console()


def _with_projects(portfolio: PortfolioConfig) -> PortfolioConfig:
    if not portfolio.enabled_projects():
        raise OrchestratorError(
            f"{portfolio.source}: no enabled project to deploy; add one or set \"enabled\": true"
        )
    return portfolio


def prepare_prefect() -> None:
    """Environment for Prefect in this process, set before Prefect is imported."""
    # Prefect's telemetry write is what raises "database is locked" on SQLite.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Quiet on the terminal, but the runs' INFO logs still reach the UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # A temporary server on a new PREFECT_HOME migrates its database first, which
    # outlasts Prefect's default wait (20 s) on two busy cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(TEMPORARY_SERVER_WAIT_S))
    # A temporary server keeps agent-slot leases where a later one finds them (see deployments.server).
    from deployments.server import DURABLE_LEASES, LEASE_STORAGE_VAR

    os.environ.setdefault(LEASE_STORAGE_VAR, DURABLE_LEASES)


TEMPORARY_SERVER_WAIT_S = 300
"""How long a run waits for the temporary server Prefect starts when none is up."""


def use_running_server(data_dir: Path) -> None:
    """Run in a Prefect server that is up (as ``orch start`` finds one) rather than a temporary one.

    Without ``PREFECT_API_URL`` Prefect would start a server for this process
    alone: seconds of start-up, and runs the UI never shows.
    """
    from deployments.server import running_server

    if not os.environ.get("PREFECT_API_URL"):
        url = running_server(data_dir)
        if url:
            os.environ["PREFECT_API_URL"] = url


DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", help="Database of a Prefect server started here: postgresql+asyncpg://user@host:port/db "
    "(default: $PREFECT_API_DATABASE_CONNECTION_URL, else SQLite beside the server's log).")]


def start(config: ConfigOpt = None,
          port: Annotated[int | None, typer.Option(help="Port for a Prefect server started here (default 4200, or a free one).")] = None,
          database_url: DatabaseOpt = None) -> None:
    """Serve every enabled project's cycles on their schedules until Ctrl+C."""
    from deployments.server import (
        DATABASE_VARS,
        backend_of,
        ensure_server,
        server_backend,
        shared_sqlite,
    )

    portfolio = _with_projects(load_portfolio(config))
    asked = backend_of(database_url) if database_url else None  # a bad URL fails before anything starts
    chosen = os.environ.get("PREFECT_API_URL")
    server = ensure_server(portfolio.data_dir, port, database_url=database_url)
    if chosen and server.process:
        console.print(f"No Prefect server answers at PREFECT_API_URL={chosen}: started one here instead.")
    backend = server_backend(server.api_url)
    if asked and not server.process and backend != asked:
        raise OrchestratorError(
            f"--database-url asks for a server on {asked}, but the one already running at {server.api_url} "
            f"is on {backend or 'a database it does not name'}: stop it, or leave out --database-url")
    # Flow runs start as subprocesses: they find the server through the environment.
    os.environ["PREFECT_API_URL"] = server.api_url
    for var in DATABASE_VARS:
        os.environ.pop(var, None)  # the server's secret: flow runs and agents have no use for it
    prepare_prefect()
    from deployments import control

    where = f"started here, log {server.log_path}" if server.process else "already running"
    on = f"on {backend}" if backend else "its database not named (started outside orch)"
    console.print(f"Prefect UI: [bold]{server.ui_url}[/] ({where}, {on})")
    _say_warning(shared_sqlite(server.api_url, backend, serving_here=True))
    try:
        _say_warning(control.set_agent_limit(server.api_url, portfolio))
    except OrchestratorError:
        server.stop()
        raise
    _print_schedules(portfolio)
    console.print("Serving; Ctrl+C stops (a cycle in progress resumes on the next run).")
    # Until serving starts, Ctrl+C and SIGTERM stop at once; from then on serving
    # stops itself (deployments.serving). A SIGINT ignored by whoever started us
    # (a background job) stays ignored.
    stops = [signal.SIGTERM]
    ctrl_c = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ctrl_c:
        stops.append(signal.SIGINT)
    try:
        with _until_interrupted(stops):
            control.serve(server.api_url, portfolio, ctrl_c)
    finally:
        server.stop()
    console.print("Stopped. Schedules stay paused until the next `orch start`.")


def server(database_url: DatabaseOpt = None,
           host: Annotated[str, typer.Option(help="Address to listen on: 0.0.0.0 for other hosts to reach it.")] = "127.0.0.1",
           port: Annotated[int | None, typer.Option(help="Port (default 4200, or a free one).")] = None,
           directory: Annotated[Path | None, typer.Option("--dir", help="Its home: log, agent-slot leases, and the SQLite database without --database-url (default ~/.orch/server).")] = None) -> None:
    """Run the Prefect server several hosts share, until Ctrl+C: on PostgreSQL with --database-url."""
    from deployments.server import backend_of, public_api_url, server_backend, start_server

    if database_url:
        backend_of(database_url)  # a bad URL fails before anything starts
    started = start_server(directory or Path.home() / ".orch" / "server", port, startup_timeout_s=180,
                           database_url=database_url, host=host)
    port_used = int(started.api_url.rsplit(":", 1)[1].split("/")[0])
    console.print(f"Prefect UI: [bold]{started.ui_url}[/] (on {server_backend(started.api_url) or 'its database'}, "
                  f"log {started.log_path})")
    console.print(f"Other hosts: PREFECT_API_URL={public_api_url(host, port_used)} orch deploy ... ; "
                  "then orch worker --pool <their pool>")
    try:
        with _until_interrupted([signal.SIGTERM, signal.SIGINT]):
            while started.process is not None and started.process.poll() is None:
                time.sleep(1)
            raise OrchestratorError(f"the Prefect server stopped by itself (log: {started.log_path})")
    finally:
        started.stop()
    console.print("Stopped.")


def worker(pool: Annotated[str, typer.Option("--pool", help="The work pool to take runs from (a process pool, created if missing).")],
           grace: Annotated[float, typer.Option(help="Seconds Prefect's worker gets to stop before it and its runs are killed.")] = 10.0) -> None:
    """Run Prefect's process worker for a pool until Ctrl+C or SIGTERM, which stop it within --grace seconds."""
    from orchestrator.adapters.leash import descendants

    # In its own session: a signal reaches us, and we stop it in order. Prefect's worker alone
    # forwards a SIGTERM to itself as a SIGINT and may then wait on its runs for as long as they take.
    process = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                "--type", "process"], start_new_session=True)
    with _until_interrupted([signal.SIGTERM, signal.SIGINT]):
        process.wait()
    if process.returncode is not None:  # it ended by itself: a server gone, a pool of another type
        raise typer.Exit(process.returncode)
    process.send_signal(signal.SIGINT)  # Prefect's own stop: no new run, its runs' processes ended
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:  # it and its runs, as a host that dies
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    console.print(f"Stopped the worker of pool {pool!r}. A run it had is marked Crashed by the server within "
                  "about two minutes (see `orch deploy`), and its cycle resumes on the project's next run.")


def deploy(config: ConfigOpt = None,
           pool: Annotated[str, typer.Option("--pool", help="Work pool (created as a process pool if missing).")] = "orchestrator") -> None:
    """Register every enabled project's deployment to a work pool for `prefect worker start`."""
    from deployments.server import DEFAULT_API_URL, running_server

    portfolio = _with_projects(load_portfolio(config))
    url = running_server(portfolio.data_dir)
    if url is None:
        where = os.environ.get("PREFECT_API_URL") or DEFAULT_API_URL
        raise OrchestratorError(
            f"no Prefect server answers at {where}: start one with `prefect server start` "
            "and set PREFECT_API_URL to its API"
        )
    prepare_prefect()
    from deployments import control

    _say_warning(control.set_agent_limit(url, portfolio))
    for name in control.register(url, portfolio, pool):
        console.print(f"Deployed [bold]{name}[/] to work pool {pool!r} on {url}")
    console.print(f"Run them with: PREFECT_API_URL={url} orch worker --pool {pool}")


def pause(project: ProjectOpt, config: ConfigOpt = None,
          reason: Annotated[str, typer.Option(help="Shown in status.")] = "paused by a user") -> None:
    """Pause a project: its schedule stops and its cycles do nothing until resumed."""
    portfolio = load_portfolio(config)
    Store.for_project(portfolio.data_dir, portfolio.project(project).name).set_paused(True, reason)
    console.print(f"Paused {project}. {_apply_schedule(portfolio, project, paused=True)}")


def resume(project: ProjectOpt, config: ConfigOpt = None) -> None:
    """Resume a paused project and its schedule."""
    portfolio = load_portfolio(config)
    Store.for_project(portfolio.data_dir, portfolio.project(project).name).set_paused(False)
    console.print(f"Resumed {project}. {_apply_schedule(portfolio, project, paused=False)}")


CycleArg = Annotated[str, typer.Argument(help="Cycle id, or the start of one (see `orch status`).")]
OnlyProject = Annotated[str | None, typer.Option("--project", "-p", help="The cycle's project (default: any).")]


def approve(cycle: CycleArg, project: OnlyProject = None, config: ConfigOpt = None,
            reason: Annotated[str, typer.Option(help="Why; kept with the decision.")] = "") -> None:
    """Approve a cycle waiting for approval of its plan or its merge."""
    _decide(cycle, project, config, True, reason)


def reject(cycle: CycleArg, reason: Annotated[str, typer.Option(help="Why; given to the next attempt.")],
           project: OnlyProject = None, config: ConfigOpt = None) -> None:
    """Reject a cycle waiting for approval: its plan's tasks fail, or its branches go back."""
    if not reason.strip():
        raise OrchestratorError("--reason must not be empty: say why, for the next attempt")
    _decide(cycle, project, config, False, reason)


def _decide(cycle: str, project: str | None, config: str | None, approve: bool, reason: str) -> None:
    from deployments.server import running_server
    from orchestrator.cli.reports import find_cycle
    from orchestrator.stages.approval import decide, waiting_for

    portfolio = load_portfolio(config)
    name, found = find_cycle(portfolio, cycle.strip(), project)
    store = Store.for_project(portfolio.data_dir, name)
    waiting = waiting_for(store, found.id)
    verb = "approve" if approve else "reject"
    decide(store, found.id, waiting.stage, approve, reason.strip(), f"orch {verb}")
    console.print(f"{'Approved' if approve else 'Rejected'} the {waiting.stage} of cycle {found.id} of {name}.")
    url = running_server(portfolio.data_dir)
    if url is not None and waiting.flow_run_id:
        prepare_prefect()
        from deployments.control import resume_waiting

        if resume_waiting(url, waiting.flow_run_id, approve, reason.strip()):
            console.print(f"Its flow run {waiting.flow_run_id} resumes now.")
            return
    console.print(f"The next cycle of {name} (`orch run -p {name}` or its schedule) carries it on.")


def _apply_schedule(portfolio: PortfolioConfig, project: str, paused: bool) -> str:
    from deployments.server import running_server

    url = running_server(portfolio.data_dir)
    if url is None:
        return "No Prefect server is running; `orch start` applies it to the schedule."
    prepare_prefect()
    from deployments.control import set_schedule_paused

    if not set_schedule_paused(url, project, paused):
        return f"It has no deployment on {url} yet; `orch start` or `orch deploy` applies it."
    return f"Schedule {'paused' if paused else 'resumed'} on {url}."


def _print_schedules(portfolio: PortfolioConfig) -> None:
    cap = portfolio.max_total_workers
    title = f"Portfolio {portfolio.name}: " + (f"max {cap} agents at once" if cap else "no portfolio-wide agent cap")
    rows = [[f"project-cycle/{p.name}", f"{p.cycle_interval_minutes} min", str(p.priority),
             "paused (orch resume)" if is_paused(portfolio.data_dir, p.name) else "active"]
            for p in portfolio.enabled_projects()]
    table, _, _ = fit(title, [Column("deployment", flex=True), Column("every", right=True),
                           Column("priority", right=True), Column("schedule")], rows, console.width)
    console.print(table)


def _say_warning(note: str) -> None:
    if note:
        console.print(f"[yellow]Warning:[/] {escape(note)}", highlight=False)


@contextmanager
def _until_interrupted(signums: list[signal.Signals]) -> Iterator[None]:
    """The block runs until one of ``signums`` comes, which ends it quietly; the old handlers come back."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in signums}
    # A signal mask is inherited through exec: one that blocks them would make them wait forever.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops like Ctrl+C: schedules paused, our server stopped.
    raise KeyboardInterrupt
