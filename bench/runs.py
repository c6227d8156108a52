"""Running ``orch`` as a user would, with timings on, against the scripted model."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.adapters.leash import descendants
from orchestrator.adapters.timing import ENV, read_spans
from orchestrator.demo.scripted import Scenario, ScriptedModel

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


def run_orch(args: list[str], env: dict[str, str], spans_file: Path, timeout_s: float = 600,
             watch: Callable[[subprocess.Popen[str]], None] | None = None) -> Run:
    """Run ``orch args`` to its end; ``watch(process)`` runs beside it in a thread."""
    spans_file.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.monotonic()
    process = subprocess.Popen([ORCH, *args], env={**env, ENV: str(spans_file)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    servers: set[int] = set()
    done = threading.Event()
    watchers = [threading.Thread(target=_spot_servers, args=(process.pid, servers, done), daemon=True)]
    if watch is not None:
        watchers.append(threading.Thread(target=watch, args=(process,), daemon=True))
    for thread in watchers:
        thread.start()
    try:
        output, _ = process.communicate(timeout=timeout_s)
    finally:
        exited = time.monotonic()
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    for thread in watchers:
        thread.join(timeout=30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the one child waited for meanwhile
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(spawned, exited, process.returncode, output, read_spans(spans_file), len(servers), cpu_s)


def _spot_servers(pid: int, servers: set[int], done: threading.Event) -> None:
    """Note every Prefect server (uvicorn) process that ``pid`` starts, until ``done``."""
    while not done.wait(0.05):
        for child in descendants(pid):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ")
            except OSError:
                continue
            if b"uvicorn" in cmdline or b"prefect server start" in cmdline:
                servers.add(child)


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


def cycle_figures(scenario: Scenario, config: Path, project: str, env: dict[str, str], workdir: Path) -> Figures:
    """Run one cycle with ``orch run`` and measure it."""
    with ScriptedModel(scenario) as model:
        run = run_orch(["run", "-p", project, "-c", str(config)], {**env, **model.env()}, workdir / "spans.jsonl")
        if run.returncode != 0:
            raise RuntimeError(f"orch run failed (exit {run.returncode}):\n{run.output[-3000:]}")
        figures = measure(run.spawned, run.exited, run.spans, model.requests, scenario.latency_s)
    figures.extra["servers started"] = run.servers_started
    figures.extra["cpu s"] = run.cpu_s
    # What orch run says it did and spent, for a cycle whose branches do not all pass.
    figures.extra["outcome"] = "; ".join(line.strip() for line in run.output.splitlines()
                                         if line.strip().startswith(("planned ", "cost: ")))
    return figures
