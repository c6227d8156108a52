"""Running ``orch`` as a user would, with timings on, against the scripted model."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.adapters.timing import ENV, read_spans
from orchestrator.demo.scripted import Scenario, ScriptedModel

from .cpu import ProcessWatch
from .timeline import Figures, measure

ORCH = str(Path(sys.executable).with_name("orch"))


@dataclass
class Run:
    """One finished ``orch`` command."""

    spawned: float
    exited: float
    returncode: int
    output: str
    spans: list[dict[str, Any]]
    servers_started: int  # Prefect servers seen among its child processes
    cpu_s: float  # user + system of it and every process it waited for (CLIs, tests, git)
    cpu_by: dict[str, float]  # cpu_s by component (see bench.cpu), and a running server's


def run_orch(args: list[str], env: dict[str, str], spans_file: Path, timeout_s: float = 600,
             watch: Callable[[subprocess.Popen[str]], None] | None = None, server_pid: int | None = None) -> Run:
    """Run ``orch args`` to its end; ``watch(process)`` runs beside it in a thread.

    ``server_pid``: the running server's process, whose CPU meanwhile is counted too.
    """
    spans_file.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.monotonic()
    process = subprocess.Popen([ORCH, *args], env={**env, ENV: str(spans_file)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    processes = ProcessWatch(process.pid, server_pid)
    watcher = threading.Thread(target=watch, args=(process,), daemon=True) if watch is not None else None
    if watcher is not None:
        watcher.start()
    try:
        output, _ = process.communicate(timeout=timeout_s)
    finally:
        exited = time.monotonic()
        processes.done.set()  # read no more: what it saw is kept for stop()
        if process.poll() is None:
            process.kill()
            process.wait()
    if watcher is not None:
        watcher.join(timeout=30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the one child waited for meanwhile
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_by = processes.stop(cpu_s)
    return Run(spawned, exited, process.returncode, output, read_spans(spans_file), processes.servers_started,
               cpu_s, cpu_by)


def base_env(home: Path, api_url: str | None) -> dict[str, str]:
    """The environment of a benchmarked command: a private home, Prefect home and agent folder.

    The private HOME keeps the user's login profile out of the figures: the CLI's
    Bash tool starts a login shell, and profiles that run pyenv, nvm or conda
    set-up can take longer than everything measured here.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "ORCH_CONFIG", "CLAUDE_CONFIG_DIR", ENV)}
    (home / "home").mkdir(exist_ok=True)
    env.update(HOME=str(home / "home"), PREFECT_HOME=str(home / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def cycle_figures(scenario: Scenario, config: Path, project: str, env: dict[str, str], workdir: Path,
                  server_pid: int | None = None) -> Figures:
    """Run one cycle with ``orch run`` and measure it (with the CPU of the running server ``server_pid``)."""
    with ScriptedModel(scenario) as model:
        run = run_orch(["run", "-p", project, "-c", str(config)], {**env, **model.env()}, workdir / "spans.jsonl",
                       server_pid=server_pid)
        if run.returncode != 0:
            raise RuntimeError(f"orch run failed (exit {run.returncode}):\n{run.output[-3000:]}")
        figures = measure(run.spawned, run.exited, run.spans, model.requests, scenario.latency_s)
    figures.extra["servers started"] = run.servers_started
    figures.extra["cpu s"] = run.cpu_s
    figures.extra["cpu by"] = run.cpu_by
    merged = re.search(r"^\s*planned \d+.*\bmerged (\d+)", run.output, re.MULTILINE)  # orch run's summary line
    figures.extra["merged"] = int(merged.group(1)) if merged else 0
    # What orch run says it did and spent, for a cycle whose branches do not all pass.
    figures.extra["outcome"] = "; ".join(line.strip() for line in run.output.splitlines()
                                         if line.strip().startswith(("planned ", "cost: ")))
    return figures
