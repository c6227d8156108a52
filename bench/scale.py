"""How far one host goes: K projects cycling at once, on a SQLite and on a PostgreSQL Prefect server.

``python -m bench scale [--projects 1,4,16] [--latency 0.5] [--cap 8] [--backends SQLite,PostgreSQL]``: for
each backend and each K, one run of the ``portfolio`` flow (every project one
cycle, all at once, two tasks each) against a fresh server, the scripted
model and the real Claude Code CLI, with ``max_total_workers`` at ``--cap``.
Per run it prints: cycles per minute; the most agent sessions alive at
once; CPU seconds per agent session of the flow's own process (ours,
Prefect's client and the store, its child processes apart: the CLIs, git
and the tests), of those children, and of the server (its database
included when it is PostgreSQL); and the p50/p95 of the slot calls and of the
other API calls as the flow's Prefect client waited for them (task runs report
over Prefect's events websocket, not in requests).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from deployments.server import Server, free_port, start_server
from orchestrator.adapters.leash import descendants
from orchestrator.demo.scripted import ScriptedModel, most_sessions_at_once

from . import postgres
from .cpu import stat_of
from .project import TEST_COMMAND, make_project
from .runs import base_env
from .soak import FaultyScenario

# Runs the portfolio flow in its own process, timing every request its Prefect client sends.
RUNNER = r"""
import asyncio, json, resource, sys, time
import httpx

sent = []
send = httpx.AsyncClient.send

async def timed(self, request, **kwargs):
    started = time.perf_counter()
    try:
        return await send(self, request, **kwargs)
    finally:
        sent.append((request.url.path, time.perf_counter() - started))

httpx.AsyncClient.send = timed
from flows.portfolio import portfolio

started = time.perf_counter()
summaries = asyncio.run(portfolio(config=sys.argv[1]))
wall = time.perf_counter() - started
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"wall_s": wall, "statuses": [str(s.status) for s in summaries],
           "failures": [f"{s.project}: {s.message}" for s in summaries if not str(s.status).endswith("done")],
           "merged": sum(len(s.merged) for s in summaries),
           "own_cpu_s": own.ru_utime + own.ru_stime, "children_cpu_s": children.ru_utime + children.ru_stime,
           "sent": sent}, open(sys.argv[2], "w"))
"""


def cpu_s(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each live process of ``pids`` has used so far."""
    return {pid: stat[1] for pid in pids if (stat := stat_of(pid)) is not None}


def postgres_pids() -> list[int]:
    uid = pwd.getpwnam("postgres").pw_uid
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid]


def _owner(path: Path) -> int:
    try:
        return path.stat().st_uid
    except OSError:
        return -1


class ServerCpu:
    """The CPU a server's processes (and a PostgreSQL cluster's) use while a run goes on, sampled each second."""

    def __init__(self, server: Server, with_postgres: bool) -> None:
        assert server.process is not None
        self.root, self.with_postgres = server.process.pid, with_postgres
        self.seen: dict[int, float] = {}
        self.before = self._sample()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _sample(self) -> dict[int, float]:
        pids = [self.root, *descendants(self.root)] + (postgres_pids() if self.with_postgres else [])
        return cpu_s(pids)

    def _watch(self) -> None:
        while not self.done.wait(1):
            self.seen.update(self._sample())

    def used_s(self) -> float:
        self.done.set()
        self.thread.join()
        self.seen.update(self._sample())
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.seen.items())


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    p95 = statistics.quantiles(values, n=20)[18]
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms ({len(values)})"


def write_portfolio(root: Path, projects: list[Path], cap: int) -> Path:
    config = {"name": "scale", "data_dir": str(root / "data"), "max_total_workers": cap,
              "projects": [{"name": p.name, "path": str(p), "max_workers": 2, "test_command": TEST_COMMAND}
                           for p in projects]}
    path = root / "portfolio.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def one_run(root: Path, server: Server, backend: str, count: int, latency_s: float, cap: int) -> str:
    projects = [make_project(root, f"p{i}") for i in range(count)]
    config = write_portfolio(root, projects, cap)
    with ScriptedModel(FaultyScenario(fail_every=10**9, hang_every=10**9, latency_s=latency_s)) as model:
        env = base_env(root, server.api_url) | model.env()
        watch = ServerCpu(server, with_postgres=backend == "PostgreSQL")
        out = root / "run.json"
        done = subprocess.run([sys.executable, "-c", RUNNER, str(config), str(out)], env=env, cwd=root,
                              capture_output=True, text=True, timeout=1800)
        server_s = watch.used_s()
        if done.returncode != 0:
            return f"{backend:10} K={count:2}: the run failed: {done.stderr.strip().splitlines()[-1:]}"
        figures = json.loads(out.read_text())
        sessions = {r.session_id for r in model.requests if r.role != "unknown"}
        at_once = most_sessions_at_once(model.requests)
    sent = figures["sent"]
    slots = [s for path, s in sent if "/concurrency_limits/" in path]
    # Task runs report over Prefect's events websocket, not in requests: the rest are flow runs' states,
    # artifacts, variables and the like.
    others = [s for path, s in sent if "/concurrency_limits/" not in path]
    n = max(len(sessions), 1)
    busy = figures["own_cpu_s"] + figures["children_cpu_s"] + server_s  # all the machine did for the run
    ok = sum(1 for s in figures["statuses"] if s.endswith("done"))
    return (f"{backend:10} K={count:2}: {ok}/{count} cycles done, {figures['merged']} merged in "
            f"{figures['wall_s']:.1f} s ({60 * ok / figures['wall_s']:.1f} cycles/min); {len(sessions)} sessions, "
            f"at most {at_once} at once\n"
            f"{'':10}       CPU per session: flow process {figures['own_cpu_s'] / n:.2f} s, its children "
            f"(CLIs, git, tests) {figures['children_cpu_s'] / n:.2f} s, server {server_s / n:.2f} s; "
            f"cores busy {busy / figures['wall_s']:.2f} of {os.cpu_count()}\n"
            f"{'':10}       slot calls {percentiles(slots)}; other API calls {percentiles(others)}"
            + "".join(f"\n{'':10}       not done: {failure}" for failure in figures["failures"]))


@contextmanager
def server_on(root: Path, backend: str) -> Iterator[Server]:
    with postgres.cluster() if backend == "PostgreSQL" else nullcontext() as url:
        server = start_server(root, free_port(), startup_timeout_s=180, database_url=url)
        try:
            yield server
        finally:
            server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--projects", default="1,4,16", help="the K to run, comma-separated")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per model response")
    parser.add_argument("--cap", type=int, default=8, help="max_total_workers")
    parser.add_argument("--backends", default="SQLite,PostgreSQL", help="the servers' databases, comma-separated")
    args = parser.parse_args(argv)
    backends = [b for b in ("SQLite", "PostgreSQL") if b.lower() in args.backends.lower().split(",")]
    if "PostgreSQL" in backends and not postgres.available:
        backends.remove("PostgreSQL")
        print(f"PostgreSQL: not measured ({postgres.INSTALL})", flush=True)
    top = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    for backend in backends:
        for count in (int(k) for k in args.projects.split(",")):
            root = top / f"{backend}-{count}"
            root.mkdir()
            # A fresh server per run: one run's history does not slow the next.
            with server_on(root / "server", backend) as server:
                print(one_run(root, server, backend, count, args.latency, args.cap), flush=True)
    return 0
