"""Two hosts on one machine, sharing a Prefect server on PostgreSQL, as the README's multi-host section sets them up.

Everything is started the way users start it: ``orch server --database-url``
on a throw-away PostgreSQL cluster; per host its own portfolio file (the
same portfolio name, its own data dir and project), ``orch deploy --pool``
and ``orch worker --pool`` (Prefect's ``prefect worker start``, stopped in
order); runs asked for with ``prefect deployment run``. One scripted model answers both hosts' agents, so its log
shows every session of both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import needs
import pytest
from cycles import as_in_a_terminal, wait_for

from bench import postgres
from bench.project import TEST_COMMAND, make_project
from bench.soak import FaultyScenario, asked_again
from deployments.liveness import SILENT_S
from deployments.server import free_port, healthy
from orchestrator.adapters.leash import descendants
from orchestrator.adapters.store import Store
from orchestrator.demo.scripted import RecordedRequest, ScriptedModel, most_sessions_at_once

pytestmark = [pytest.mark.slow, needs.postgres, pytest.mark.usefixtures("agent_env")]

BIN = Path(sys.executable).parent
CAP = 2  # max_total_workers of both hosts: below the 2 + 2 workers they would run at once
# The automation's silence, its evaluation and a heartbeat's age, with room for a busy server
# (a full slow-tier rehearsal once missed 150 s in all; alone the wait is far shorter).
CRASH_WITHIN_S = SILENT_S + 150


@dataclass
class Host:
    """One host: its portfolio file, data dir and project, its pool and its worker."""

    pool: str
    root: Path
    env: dict[str, str]
    project: str  # the one project in its portfolio file
    worker: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "portfolio.json"

    def set_up(self) -> None:
        path = make_project(self.root, self.project)
        self.config.write_text(json.dumps({
            "name": "shared", "data_dir": str(self.root / "data"), "max_total_workers": CAP,
            "projects": [{"name": self.project, "path": str(path), "max_workers": 2, "test_command": TEST_COMMAND,
                          "cycle_interval_minutes": 600, "max_consecutive_failures": 50}],
        }))
        self.deploy()

    def deploy(self) -> None:
        deployed = self.cli("orch", "deploy", "--config", str(self.config), "--pool", self.pool)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    def cli(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / command), *args], env=self.env, capture_output=True, text=True,
                              timeout=180, cwd=self.root)

    def start_worker(self) -> None:
        log = (self.root / "worker.log").open("ab")
        self.worker = subprocess.Popen([str(BIN / "orch"), "worker", "--pool", self.pool],
                                       env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)

    def run(self) -> str:
        """Ask for a cycle as a user does; the flow run's id."""
        asked = self.cli("prefect", "deployment", "run", f"project-cycle/{self.project}")
        found = re.search(r"UUID: ([0-9a-f-]{36})", asked.stdout)
        assert found, asked.stdout + asked.stderr
        return found[1]

    def cycles(self) -> list[Any]:
        data_dir = Path(json.loads(self.config.read_text())["data_dir"])
        return Store.for_project(data_dir, self.project).list_cycles()

    def log(self) -> str:
        return (self.root / "worker.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            for pid in [self.worker.pid, *descendants(self.worker.pid)]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.worker.wait()


def flow_run(api_url: str, run_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{api_url}/flow_runs/{run_id}", timeout=10) as response:
        return dict(json.load(response))


def run_state(api_url: str, run_id: str) -> str:
    return str(flow_run(api_url, run_id)["state"]["name"])


def runs_window(api_url: str, run_id: str) -> tuple[str, str]:
    run = flow_run(api_url, run_id)
    return run["start_time"], run["end_time"]


def of_project(model: ScriptedModel, name: str, since: int = 0) -> list[RecordedRequest]:
    """The requests of ``name``'s sessions, from the ``since``-th request of all."""
    return [r for r in model.requests[since:] if r.cwd is not None and name in r.cwd.parts]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``orch server --database-url`` on a throw-away PostgreSQL cluster."""
    home = tmp_path_factory.mktemp("server")
    port = free_port()
    with postgres.cluster() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"HOME": str(home)}
        log = (home / "orch-server.log").open("ab")
        process = subprocess.Popen([str(BIN / "orch"), "server", "--database-url", database_url, "--port", str(port),
                                    "--dir", str(home)], env=env, stdout=log, stderr=subprocess.STDOUT)
        api_url = f"http://127.0.0.1:{port}/api"
        try:
            wait_for(lambda: healthy(api_url) or process.poll() is not None, "orch server", 240)
            assert process.poll() is None, (home / "orch-server.log").read_text()
            yield api_url
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


@pytest.mark.timeout(900)  # two waits for the heartbeat automation (90 s of silence each) among six cycles
def test_two_hosts_share_the_cap_and_a_lost_host_resumes_without_paying_again(
        server_url: str, tmp_path: Path) -> None:
    with ScriptedModel(FaultyScenario(fail_every=10**9, hang_every=10**9, latency_s=0.4)) as model:
        env = {**os.environ, **model.env(), "PREFECT_API_URL": server_url, "PREFECT_HOME": str(tmp_path / "home"),
               "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_LOGGING_LEVEL": "INFO"}
        alpha, beta = Host("host-a", tmp_path / "a", env, "alpha"), Host("host-b", tmp_path / "b", env, "beta")
        # Host a will be gone for good; its project moves to host c.
        gamma = Host("host-c", tmp_path / "c", env, "alpha")
        try:
            for host in (alpha, beta):
                host.set_up()
                host.start_worker()
            _check_doctor(alpha)
            _both_cycle_at_once_within_the_cap(server_url, model, alpha, beta)
            _a_host_lost_and_a_worker_stopped_resume(server_url, model, alpha, beta, gamma)
        finally:
            for host in (alpha, beta, gamma):
                host.stop()


def _check_doctor(host: Host) -> None:
    # Two pools have workers online, but the server is on PostgreSQL: nothing to warn of.
    wait_for(lambda: "database: PostgreSQL" in host.cli("orch", "doctor", "-c", str(host.config)).stdout,
             "orch doctor to name the database", 60)
    said = host.cli("orch", "doctor", "-c", str(host.config)).stdout
    line = next(x for x in said.splitlines() if "Prefect server" in x)
    assert line.startswith("✓") and "SQLite" not in line, said


def _both_cycle_at_once_within_the_cap(api_url: str, model: ScriptedModel, alpha: Host, beta: Host) -> None:
    runs = {host.project: host.run() for host in (alpha, beta)}
    for host in (alpha, beta):
        wait_for(lambda h=host: run_state(api_url, runs[h.project]) == "Completed", f"{host.project}'s cycle", 240)
        [cycle] = host.cycles()
        assert cycle.status == "done" and cycle.summary is not None and len(cycle.summary.merged) == 2, host.log()
    (a_start, a_end), (b_start, b_end) = (runs_window(api_url, runs[h]) for h in ("alpha", "beta"))
    assert max(a_start, b_start) < min(a_end, b_end)  # the two hosts' cycles ran at the same time
    # The shared cap held across both hosts, and bound: without it four workers would have run at once.
    assert most_sessions_at_once(model.requests) == CAP


def _a_host_lost_and_a_worker_stopped_resume(api_url: str, model: ScriptedModel, alpha: Host, beta: Host,
                                              gamma: Host) -> None:
    seen = len(model.requests)
    lost, kept = alpha.run(), beta.run()
    # Host alpha dies mid-cycle, after its planner finished: its worker and everything under it, at once.
    wait_for(lambda: any(r.final for r in of_project(model, "alpha", seen) if r.role == "planner")
             and any(r.role == "worker" for r in of_project(model, "alpha", seen)), "alpha's workers")
    cut = [(r.session_id, time.monotonic()) for r in of_project(model, "alpha", seen)]
    alpha.stop()
    # Host beta goes on and merges, unaffected.
    wait_for(lambda: run_state(api_url, kept) == "Completed", "beta's cycle", 240)
    assert [c.status for c in beta.cycles()] == ["done", "done"], beta.log()
    # A process manager stops beta's worker (SIGTERM) mid-cycle: it stops, taking its run's process with it.
    seen = len(model.requests)
    stopped = beta.run()
    wait_for(lambda: any(r.final for r in of_project(model, "beta", seen) if r.role == "planner"), "beta's plan")
    assert beta.worker is not None
    cut += [(r.session_id, time.monotonic()) for r in of_project(model, "beta", seen)]
    under = descendants(beta.worker.pid)  # Prefect's worker, the run's process, its agents
    beta.worker.send_signal(signal.SIGTERM)
    assert beta.worker.wait(30) == 0  # within its grace (10 s)
    assert "Stopped the worker of pool 'host-b'" in beta.log()
    wait_for(lambda: not [pid for pid in under if Path(f"/proc/{pid}").exists()], "the stopped worker's processes to end", 15)
    # Nobody tells the server: the runs' heartbeats stop, and the server's automation crashes them.
    for name, run_id in (("host a's lost run", lost), ("the stopped worker's run", stopped)):
        try:
            wait_for(lambda r=run_id: run_state(api_url, r) == "Crashed", f"{name} to be marked Crashed",
                     CRASH_WITHIN_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it is {run_state(api_url, run_id)}") from None
    # Host a is gone for good: alpha moves to host c. Its checkout and data dir are at the same
    # paths there (on one machine they are there already), its entry in host c's portfolio file.
    gamma.root.mkdir()
    shutil.copy(alpha.config, gamma.config)
    gamma.deploy()
    # Back up: the next run of each project resumes its cycle, and no finished session is asked again.
    for host in (gamma, beta):
        host.start_worker()
    for host in (gamma, beta):
        resumed = host.run()
        wait_for(lambda r=resumed: run_state(api_url, r) == "Completed", f"{host.project}'s resumed cycle", 240)
        assert flow_run(api_url, resumed)["work_pool_name"] == host.pool
    assert [c.status for c in alpha.cycles()] == ["done", "done"], alpha.log()
    assert [c.status for c in beta.cycles()] == ["done"] * 3, beta.log()
    for host in (alpha, beta):
        assert all(len(c.summary.merged) == 2 for c in host.cycles() if c.summary), host.log()
    # (A session whose final answer was on its way at the kill may be asked again: the CLI never had it.)
    assert not asked_again(model, cut, lost=False)


@pytest.mark.timeout(400)
def test_orch_start_runs_its_server_on_postgresql(tmp_path: Path) -> None:
    # One machine outgrowing SQLite without a second host: `orch start --database-url`.
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"name": "solo", "data_dir": str(tmp_path / "data"), "projects": [
        {"name": "calc", "path": str(make_project(tmp_path, "calc")), "test_command": TEST_COMMAND,
         "cycle_interval_minutes": 600}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"HOME": str(tmp_path)}
    log = tmp_path / "start.log"
    with postgres.cluster() as database_url:
        start = subprocess.Popen([str(BIN / "orch"), "start", "-c", str(config), "--port", str(free_port()),
                                  "--database-url", database_url], env=env, stdout=log.open("w"),
                                 stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=as_in_a_terminal)
        try:
            wait_for(lambda: "Serving" in log.read_text() or start.poll() is not None, "orch start to serve", 240)
            said = log.read_text()
            assert re.search(r"Prefect UI: \S+ \(started here, log \S+, on PostgreSQL\)", said), said
            assert "Warning" not in said and "postgres@" not in said, said  # nothing shared; the URL not echoed
            doctor = subprocess.run([str(BIN / "orch"), "doctor", "-c", str(config)], env=env, capture_output=True,
                                    text=True, timeout=120)
            assert "database: PostgreSQL" in doctor.stdout, doctor.stdout
        finally:
            start.send_signal(signal.SIGINT)
            code = start.wait(90)
    assert code == 0 and "Stopped." in log.read_text(), log.read_text()
