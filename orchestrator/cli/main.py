"""The ``orch`` command line.

Read commands (:mod:`.read`) open the config and SQLite and ask a Prefect
server only when one is already up, so they answer at once; the commands
that serve and deploy are in :mod:`.serve`. Errors print one ``Error: ...``
line and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from orchestrator.adapters.checks import failed_tests
from orchestrator.adapters.internals import click_exceptions
from orchestrator.adapters.timing import mark
from orchestrator.cli import gc, read, serve, setup
from orchestrator.cli.read import (  # there: read cannot import main
    ConfigOpt,
    ProjectOpt,
    _print_tasks,
)
from orchestrator.cli.reports import waits_for
from orchestrator.cli.serve import prepare_prefect, use_running_server
from orchestrator.domain.errors import OrchestratorError
from orchestrator.domain.models import CycleStatus, CycleSummary, Task, TaskStatus, TaskType

if TYPE_CHECKING:
    from deployments.server import Server

app = typer.Typer(
    help="Plan, work, judge and merge with Claude Code agents, on Prefect.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console()
_debug = False


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    global _debug
    _debug = debug


def _store(project: str, config: str | None, check_repo: bool = False):
    from orchestrator.adapters.git_repo import GitRepo
    from orchestrator.adapters.portfolio_file import load_portfolio
    from orchestrator.adapters.store import Store

    portfolio = load_portfolio(config)
    project_config = portfolio.project(project)
    if check_repo:  # a repository we can work in (and GitHub if it needs it), before anything is written
        from deployments.server import healthy
        from orchestrator.stages.backlog import check_github

        check_github(project_config, GitRepo(project_config.path, project_config.main_branch))
        chosen = os.environ.get("PREFECT_API_URL")
        if chosen and not healthy(chosen):  # said at once, rather than after Prefect's retries
            raise OrchestratorError(_NO_SERVER.format(server=chosen))
    return Store.for_project(portfolio.data_dir, project_config.name)


def run_cycle(project: str, config: str | None, wait: bool = False) -> CycleSummary:
    """One cycle of ``project`` through the ``project-cycle`` flow, with a live progress line."""
    from orchestrator.adapters.portfolio_file import load_portfolio
    from orchestrator.cli.progress import live_progress

    store = _store(project, config, check_repo=True)  # before Prefect starts
    use_running_server(store.path.parent)
    prepare_prefect()
    import asyncio

    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    from flows.project_cycle import project_cycle

    if not _debug:
        _hide_expected_tracebacks()
    server = os.environ.get("PREFECT_API_URL") or "the temporary Prefect server"
    try:
        cap = load_portfolio(config).max_total_workers
        with live_progress(console, store.path, store.project, cap):
            return asyncio.run(project_cycle(project=project, config=config, wait=wait))
    except (httpx.HTTPError, PrefectHTTPStatusError) as exc:
        raise OrchestratorError(f"{server} failed a request: {exc}; check it (`orch doctor`) and run "
                                "again: the cycle resumes from its finished steps") from exc
    except RuntimeError as exc:
        error = _server_error(exc, server)
        if error is None:
            raise
        raise error from exc
    finally:
        now = time.monotonic()  # for bench/: this process's peak memory
        mark("rss", "orch run", now, now, peak_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _server_error(exc: RuntimeError, server: str) -> OrchestratorError | None:
    """Prefect's failures to reach a server as one line; None for any other RuntimeError."""
    if "ephemeral Prefect API server" in str(exc):
        return OrchestratorError(
            "the temporary Prefect server did not start in "
            f"{os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS']} s: start one with "
            "`prefect server start` (or `orch start`) and run again; `orch doctor` checks the set-up")
    if "Failed to reach API" in str(exc):
        return OrchestratorError(_NO_SERVER.format(server=server))
    return None


_NO_SERVER = ("no Prefect server answers at {server}: start it, or unset PREFECT_API_URL and orch run "
              "starts a temporary one; `orch doctor` checks the set-up")


@app.command()
def run(project: ProjectOpt, config: ConfigOpt = None,
        cycles: Annotated[int, typer.Option(min=1, help="How many cycles to run one after another.")] = 1,
        wait: Annotated[bool, typer.Option("--wait", help="If a cycle of the project is running, wait for it instead of leaving.")] = False) -> None:
    """Run one or more cycles of a project now."""
    for _ in range(cycles):
        summary = run_cycle(project, config, wait)
        print_summary(summary)
        if summary.status in (CycleStatus.skipped, CycleStatus.busy, CycleStatus.waiting, CycleStatus.budget,
                              CycleStatus.rate_limited):
            break


@app.command()
def demo(directory: Annotated[Path | None, typer.Option("--dir", help="Where to create the sample project (default: a new temporary folder).")] = None,
         latency: Annotated[float, typer.Option(help="Scripted model latency per response, in seconds.")] = 0.0,
         ui: Annotated[bool, typer.Option("--ui", help="Keep the Prefect server up afterwards and print the cycle's page in its UI.")] = False) -> None:
    """Run one full cycle offline on a sample project with the scripted model."""
    from deployments.server import ensure_server
    from orchestrator.demo.sample import (
        check_outcome,
        demo_scenario,
        make_sample_project,
        write_portfolio,
    )
    from orchestrator.demo.scripted import ScriptedModel

    root = (directory or Path(tempfile.mkdtemp(prefix="orch-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    project_path = make_sample_project(root)
    config = write_portfolio(root, project_path)
    console.print(f"Sample project: [bold]{project_path}[/] (3 backlog items, tests with unittest)")
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    # A server of our own start-up path, as `orch start` has: it waits as long as a
    # first start needs (a new database migrates), and the UI can show the run after.
    server = ensure_server(root / "data", startup_timeout_s=SERVER_STARTUP_S)
    os.environ["PREFECT_API_URL"] = server.api_url
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server too, as Ctrl+C does
    try:
        with ScriptedModel(demo_scenario(latency)) as model:
            os.environ.update(model.env())
            console.print(f"Scripted model on {model.url}; running one cycle through Prefect "
                          f"at {server.ui_url}...")
            summary = run_cycle("calc", str(config))
        print_summary(summary)
        store = _store("calc", str(config))
        after = store.list_tasks()
        _print_tasks(after, [waits_for(store, t) for t in after], "Tasks after the cycle", False)
        console.print(f"\nAudit trail: {project_path / '.orch'}\nDatabase:    {root / 'data' / 'calc.db'}\nConfig:      {config}")
        console.print(f"Try: orch tasks --project calc --config {config}")
        check_outcome(summary)
        if ui:
            run_id = store.get_cycle(summary.cycle_id).flow_run_id if summary.cycle_id else ""
            _show_in_ui(server, run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _drain_prefect()  # its logs and events reach the server before the server stops
        server.stop()


SERVER_STARTUP_S = 300
"""How long a Prefect server this process starts may take to answer: a first start
migrates a new database, which took up to ~40 s on two busy cores."""


def _show_in_ui(server: Server, run_id: str) -> None:
    """Point at the cycle's page and keep a server this process started up until Ctrl+C."""
    console.print(f"\nPrefect UI:     [bold]{server.ui_url}[/]\nThe cycle's run: [bold]{server.ui_url}/runs/flow-run/{run_id}[/]")
    if server.process is None:
        console.print("That server was already running; it keeps running.")
        return
    console.print(f"The server keeps running here (log {server.log_path}); press Ctrl+C to stop it.")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        console.print("Stopping the Prefect server.")


def _drain_prefect(timeout_s: float = 10) -> None:
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout_s)
    EventsWorker.drain_all(timeout=timeout_s)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@app.command("add-task")
def add_task(project: ProjectOpt, title: Annotated[str, typer.Option(help="Short title.")],
             desc: Annotated[str, typer.Option("--desc", help="What to do, self-contained.")] = "",
             type: Annotated[TaskType, typer.Option("--type", help="Task type.")] = TaskType.code,
             priority: Annotated[int, typer.Option(min=1, max=5, help="1 is most urgent.")] = 3,
             after: Annotated[list[str] | None, typer.Option(
                 "--after", help="Id of a task that must merge first (repeat for several).")] = None,
             config: ConfigOpt = None) -> None:
    """Add a task by hand; the next cycle works on it (once the tasks it comes after merged)."""
    from orchestrator.adapters.portfolio_file import load_portfolio

    if not title.strip():
        raise OrchestratorError("--title must not be empty")
    store = _store(project, config)
    attempts = load_portfolio(config).project(project).max_task_attempts
    prerequisites = list(dict.fromkeys(a.strip() for a in after or []))
    task = store.add_task(Task(title=title.strip(), description=desc or title, type=type, priority=priority,
                               source="manual", max_attempts=attempts, depends_on=prerequisites))
    console.print(f"Added task [bold]{task.id}[/]: {escape(task.title)}"
                  + (f" (after {', '.join(task.depends_on)})" if task.depends_on else ""))
    if task.status is TaskStatus.blocked:
        roots = ", ".join(t.id for t in store.failed_roots(task))
        console.print(f"It is blocked: {roots} failed for good; `orch retry` it to let this one run.")


@app.command()
def retry(project: ProjectOpt,
          task_id: Annotated[str, typer.Argument(help="Id of a failed task (see `orch tasks -s failed`).")],
          config: ConfigOpt = None) -> None:
    """Give a failed task a fresh set of attempts; the next cycle works on it again."""
    task = _store(project, config).retry_task(task_id.strip())
    console.print(f"Task [bold]{task.id}[/] is pending again, with {task.max_attempts} attempt(s): "
                  f"{escape(task.title)}")


def print_summary(summary: CycleSummary) -> None:
    """What a cycle did, for people."""
    if summary.status in (CycleStatus.skipped, CycleStatus.busy):
        console.print(summary.message)
        return
    console.print(f"\n[bold]Cycle {summary.cycle_id}[/] of {summary.project}: {summary.status}")
    if summary.message:
        console.print(summary.message, highlight=False)
    console.print(f"planned {len(summary.planned)}, worked {len(summary.worked)}, passed {len(summary.passed)}, merged {len(summary.merged)}")
    for task_id, why in summary.rejected.items():
        console.print(f"  [red]not merged[/] {task_id}: {escape(headline(why))}", highlight=False)
    costs = ", ".join(f"{role} ${cost:.4f}" for role, cost in sorted(summary.cost_by_role.items()))
    console.print(f"cost: {costs or 'none'} (total ${summary.total_cost_usd:.4f})")


def headline(reason: str, limit: int = 400) -> str:
    """A rejection's reasons without the output quoted after them, or else that output's last lines.

    The reasons name the failing tests when the runner's output names them;
    otherwise the end of the output is where runners say what failed.
    """
    head, _, output = reason.partition("\n\nOutput of ")
    head = " ".join(head.split())
    if output and not failed_tests(output):
        last = [line.strip() for line in output.splitlines()[1:] if line.strip()][-3:]
        head += " | " + " | ".join(last)
    return head if len(head) <= limit else head[: limit - 3] + "..."


# The read commands live in read.py.
for _command in (read.status, read.tasks, read.cycles, read.show, read.costs):
    app.command()(_command)
# Those that run the portfolio through a Prefect server live in serve.py.
for _serve_command in (serve.start, serve.server, serve.worker, serve.deploy, serve.pause, serve.resume,
                       serve.approve, serve.reject):
    app.command()(_serve_command)
# Those that set a user up (init, doctor) live in setup.py.
for _setup_command in (setup.init, setup.doctor):
    app.command()(_setup_command)
# Retention's own command lives in gc.py.
app.command()(gc.gc)


class _ExpectedErrors(logging.Filter):
    """Drops Prefect's terminal records of an OrchestratorError: ``main`` prints it as one line.

    Only the terminal handler gets this filter; the run's logs in the UI keep the traceback.
    """

    names = ("OrchestratorError", *(c.__name__ for c in OrchestratorError.__subclasses__()))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], OrchestratorError):
            return False
        message = record.getMessage()
        return not any(f"{name}: " in message or f"{name}(" in message for name in self.names)


def _hide_expected_tracebacks() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_ExpectedErrors())


EXIT_GRACE_S = 30.0
"""How long the interpreter's own shutdown may take once a command is done (see :func:`main`)."""


def main() -> None:
    """Entry point: every error, ours or a usage error, is one ``Error:`` line and a non-zero exit.

    Once the command is done, the process exits within ``EXIT_GRACE_S``.
    Python waits at exit for every non-daemon thread, and a library can leave
    one waiting for ever: anyio stops its worker threads only when the event
    loop that started them finishes its main task. `orch start` was seen
    hanging so after Ctrl+C, its work done, on an idle anyio worker thread.
    """
    try:
        run_command()
    except SystemExit as exc:
        _exit_within_grace(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
        raise
    except BaseException:
        _exit_within_grace(1)
        raise


def _exit_within_grace(code: int) -> None:
    watchdog = threading.Timer(EXIT_GRACE_S, _exit_now, args=(code,))
    watchdog.daemon = True  # a normal exit does not wait for it
    watchdog.start()


def _exit_now(code: int) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run_command() -> None:
    """The command ``sys.argv`` names, ending in SystemExit; :func:`main` without its exit watchdog."""
    click_errors = click_exceptions()
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(2)  # the help is printed already
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "orch"
        _error(f"{exc.format_message()} (see `{where} --help`)")
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        _error(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        _error("aborted")
        sys.exit(1)
    except OrchestratorError as exc:
        if _debug:
            raise
        _error(str(exc))
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    console.print(f"[red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
