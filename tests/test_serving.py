"""Operating through a real ``prefect server start`` on loopback, as users do.

One server for the module. Cycles run in subprocesses started the way users
start them (``orch start``, ``prefect worker start``, ``prefect deployment
run``, ``prefect deploy --all``), against the scripted model.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import needs
import pytest
from cycles import as_in_a_terminal, processes_under, wait_for
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments import control
from deployments.server import Server, free_port, start_server
from deployments.serving import StoppingRunner
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import ScriptedModel
from orchestrator.domain.state import Cycle
from scripts.headless import Chromium

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("agent_env")]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real Prefect server with its own database, started the way ``orch start`` starts one."""
    # Not Prefect's default port: a developer's own server may be there.
    running = start_server(tmp_path_factory.mktemp("prefect-server"), port=free_port())
    yield running
    running.stop()


def sample(root: Path, name: str = "calc", interval_minutes: int = 60) -> Path:
    """The demo project under ``root`` with its portfolio file; returns the file."""
    config = write_portfolio(root, make_sample_project(root))
    data = json.loads(config.read_text())
    data["projects"][0].update(name=name, cycle_interval_minutes=interval_minutes)
    config.write_text(json.dumps(data))
    return config


def env_for(server: Server, model: ScriptedModel, home: Path) -> dict[str, str]:
    return {**os.environ, **model.env(), "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home),
            "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_LOGGING_LEVEL": "INFO", "COLUMNS": "200"}


def read(server: Server, query: Callable[[Any], Any]) -> Any:
    """Run ``query(client)`` against the server."""
    async def run() -> Any:
        async with get_client() as client:
            return await query(client)

    with control.api(server.api_url):
        return anyio.run(run)


def run_logs(server: Server, run_output: str) -> str:
    """The logs of the flow run that ``prefect deployment run`` reported creating."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run_id = re.search(r"UUID: ([0-9a-f-]{36})", run_output)
    assert run_id, run_output
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id[1]]))
    return "\n".join(entry.message for entry in read(server, lambda c: c.read_logs(log_filter=log_filter)))


def artifact_id(server: Server, key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    artifacts = read(server, lambda c: c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))))
    return str(artifacts[-1].id)


def cycles(config: Path, name: str) -> list[Cycle]:
    return Store.for_project(config.parent / "data", name).list_cycles()


def orch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "orch"), *args], env=env, capture_output=True, text=True, timeout=180)


def test_prefect_deploy_all_from_the_root(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(tmp_path)}
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "orchestrator", "--type", "process"],
                   env=env, cwd=ROOT, check=True, capture_output=True)
    deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for name in ("project-cycle/project-cycle", "portfolio/portfolio"):
        deployment = read(server, lambda c, n=name: c.read_deployment_by_name(n))
        assert deployment.work_pool_name == "orchestrator"
        assert deployment.global_concurrency_limit.limit == 1  # never two at once


def test_orch_start_serves_schedules_pauses_and_stops(server: Server, tmp_path: Path) -> None:
    config = sample(tmp_path, interval_minutes=1)
    with ScriptedModel(demo_scenario()) as model:
        env = env_for(server, model, tmp_path / "home")
        start = serve(env, config, tmp_path / "start.log")
        try:
            _serve_and_check(server, config, env, tmp_path)
        finally:
            code = interrupt(start, tmp_path / "start.log")
        output = (tmp_path / "start.log").read_text()
        assert code == 0, output
        assert f"Prefect UI: {server.ui_url} (already running, on SQLite)" in output and "Stopped." in output
        # Serving ended: Prefect paused the schedule; the next `orch start` sets it from the store again.
        assert deployment_paused(server, "calc")
        again = serve(env, config, tmp_path / "again.log")
        try:
            wait_for(lambda: not deployment_paused(server, "calc"), "the schedule active again", 60)
        finally:
            assert interrupt(again, tmp_path / "again.log") == 0


def serve(env: dict[str, str], config: Path, log: Path) -> subprocess.Popen[str]:
    # PYTHONFAULTHANDLER: on SIGABRT, every thread's stack goes to the log (see `interrupt`).
    return subprocess.Popen([str(BIN / "orch"), "start", "-c", str(config)], env={**env, "PYTHONFAULTHANDLER": "1"},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, preexec_fn=as_in_a_terminal)


def interrupt(start: subprocess.Popen[str], log: Path) -> int:
    """Ctrl+C for `orch start`; its exit code. If it does not stop, say where it hangs, then fail."""
    start.send_signal(signal.SIGINT)
    try:
        return start.wait(60)
    except subprocess.TimeoutExpired:
        processes = subprocess.run(["ps", "-eo", "pid,ppid,pgid,stat,etime,args"], capture_output=True, text=True).stdout
        signals = [line for line in Path(f"/proc/{start.pid}/status").read_text().splitlines() if line.startswith("Sig")]
        processes += "\nSignals of orch start: " + ", ".join(signals)
        start.send_signal(signal.SIGABRT)
        start.wait(10)
        raise AssertionError(f"orch start ignored Ctrl+C for 60 s.\nProcesses:\n{processes}\n"
                             f"Its log and stacks:\n{log.read_text()[-20000:]}") from None


def deployment_paused(server: Server, project: str) -> bool:
    return bool(read(server, lambda c: c.read_deployment_by_name(f"project-cycle/{project}")).paused)


def _serve_and_check(server: Server, config: Path, env: dict[str, str], tmp_path: Path) -> None:
    # The schedule fires a cycle by itself.
    first = wait_for(lambda: [c for c in cycles(config, "calc") if c.status == "done"], "a scheduled cycle")[0]
    flow_run = read(server, lambda c: c.read_flow_run(first.flow_run_id))
    assert flow_run.auto_scheduled and flow_run.name == "calc"
    deployment = read(server, lambda c: c.read_deployment_by_name("project-cycle/calc"))
    assert flow_run.deployment_id == deployment.id and not deployment.paused

    # A run asked for by hand is picked up by the serving process too.
    run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "project-cycle/calc", "--watch",
                          "--watch-timeout", "120"], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + run.stderr
    assert len([c for c in cycles(config, "calc") if c.status == "done"]) >= 2

    # Status reads the next scheduled run from the server.
    status = json.loads(orch(env, "status", "-c", str(config), "--json").stdout)
    assert status[0]["project"] == "calc" and status[0]["next_run"]

    # Pause stops the schedule (and a run asked for anyway does nothing); resume restarts it.
    paused = orch(env, "pause", "-p", "calc", "-c", str(config))
    assert paused.returncode == 0 and "Schedule paused" in paused.stdout, paused.stdout + paused.stderr
    assert deployment_paused(server, "calc")
    before = len(cycles(config, "calc"))
    skipped = subprocess.run([str(BIN / "prefect"), "deployment", "run", "project-cycle/calc", "--watch",
                              "--watch-timeout", "120"], env=env, capture_output=True, text=True, timeout=180)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    wait_for(lambda: "'calc' is paused" in run_logs(server, skipped.stdout), "the paused run's log", 30)
    assert len(cycles(config, "calc")) == before
    status = json.loads(orch(env, "status", "-c", str(config), "--json").stdout)
    assert status[0]["paused"]
    resumed = orch(env, "resume", "-p", "calc", "-c", str(config))
    assert resumed.returncode == 0 and "Schedule resumed" in resumed.stdout, resumed.stdout + resumed.stderr
    assert not deployment_paused(server, "calc")


@pytest.mark.guarantee
def test_stopping_orch_start_mid_cycle_stops_its_agents_and_the_cycle_resumes(server: Server, tmp_path: Path) -> None:
    config = sample(tmp_path, name="stopped")
    worktrees = tmp_path / "calc" / ".orch" / "worktrees"
    store = Store.for_project(tmp_path / "data", "stopped")
    latency = 2.0  # each turn of an agent that outlived its run would start seconds after the stop
    with ScriptedModel(demo_scenario(latency_s=latency)) as model:
        env = env_for(server, model, tmp_path / "home")
        start = serve(env, config, tmp_path / "start.log")
        try:
            wait_for(lambda: orch_prefect(env, "deployment", "run", "project-cycle/stopped").returncode == 0,
                     "the deployment to be served", 60)
            # Stop while a worker's next question is in flight, not as an answer is on its way:
            # an answer the CLI gets in the instant of the kill may not reach its transcript.
            wait_for(lambda: [r for r in model.requests if r.role == "worker" and time.monotonic() - r.finished > 0.3],
                     "workers at work")
        finally:
            stop = time.monotonic()
            assert interrupt(start, tmp_path / "start.log") == 0
        # The agents stopped with the run: no process works in a worktree, nobody asks the model.
        wait_for(lambda: not processes_under(worktrees), "the agents to stop", 3)
        time.sleep(2 * latency)  # answers to questions asked before the stop arrive
        settled = len(model.requests)
        assert not [r for r in model.requests if r.started > stop + 2]
        stopped = store.list_cycles()[0]
        assert stopped.status == "running"
        finished = {r["task_id"] for r in store.db.query("SELECT task_id FROM worker_results WHERE success")}
        # Answered well before the stop, so the CLI had the answer; a question in flight is asked again.
        before = {(r.session_id, r.turn) for r in model.requests if r.finished < stop - 0.5}

        # Running again finishes the same cycle; what was answered is not asked again.
        again = orch(env, "run", "-p", "stopped", "-c", str(config))
        assert again.returncode == 0, again.stdout + again.stderr
    cycle = store.get_cycle(stopped.id)
    assert cycle.status == "done" and len(store.list_cycles()) == 1
    repeated = [r for r in model.requests[settled:] if (r.session_id, r.turn) in before]
    assert repeated == []
    assert not [r for r in model.requests[settled:] if r.role == "planner" or (r.role == "worker" and r.task in finished)]
    assert not worktrees.exists() or not any(worktrees.iterdir())
    dead = read(server, lambda c: c.read_flow_run(stopped.flow_run_id))
    assert dead.state.is_crashed()  # not cancelled: nobody asked for that, and the cycle went on


async def stop_as_soon_as_one_suspends(runner: StoppingRunner) -> dict[str, UUID]:
    """Start a run that suspends and one that works; stop the moment the first is Suspended."""
    async with get_client() as client:
        while not runner.started:
            await asyncio.sleep(0.1)
        deployment = await client.read_deployment_by_name("stopping/stop")
        runs = {which: (await client.create_flow_run_from_deployment(
                    deployment.id, parameters={"suspend": which == "suspends"})).id
                for which in ("suspends", "works")}

        async def state(which: str) -> str:
            return (await client.read_flow_run(runs[which])).state.name

        while await state("works") != "Running" or await state("suspends") != "Suspended":
            await asyncio.sleep(0.05)
        runner.handle_sigterm()  # what SIGTERM or Ctrl+C does
        return runs


async def serve_and_stop() -> dict[str, str]:
    from stopping_flows import stopping

    runner = StoppingRunner(pause_on_shutdown=True, query_seconds=1)
    await runner.aadd_deployment(await stopping.to_deployment(name="stop"))
    stop = asyncio.ensure_future(stop_as_soon_as_one_suspends(runner))
    await runner.start()  # returns once stopped, the runs' ends reported
    runs = await stop
    async with get_client() as client:
        return {which: (await client.read_flow_run(run)).state.name for which, run in runs.items()}


def test_a_run_stopped_as_it_suspends_stays_suspended_and_a_working_one_crashes(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stop kills the runs in flight; Prefect's runner reports each one Crashed,
    # but for one that had just suspended for approval, whose process was only ending.
    monkeypatch.chdir(ROOT)  # the runner loads the flow by its path from here
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        states = asyncio.run(serve_and_stop())
    assert states == {"suspends": "Suspended", "works": "Crashed"}


async def serve_stopped_while_starting(monkeypatch: pytest.MonkeyPatch) -> bool:
    """Ctrl+C right after the deployment is added (its schedule active), before the runner has started."""
    from stopping_flows import stopping

    from deployments import serving

    add = StoppingRunner.aadd_deployment

    async def add_then_interrupt(self: StoppingRunner, deployment: Any) -> Any:
        added = await add(self, deployment)
        os.kill(os.getpid(), signal.SIGINT)
        return added

    monkeypatch.setattr(StoppingRunner, "aadd_deployment", add_then_interrupt)
    with anyio.fail_after(60):
        await serving.serve([await stopping.to_deployment(name="early", interval=3600)], ctrl_c=True)
    async with get_client() as client:
        return (await client.read_deployment_by_name("stopping/early")).paused


def test_ctrl_c_while_serving_starts_stops_it_once_started(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # Raised there, a KeyboardInterrupt could land in code that swallows it, and serving went on.
    monkeypatch.chdir(ROOT)
    before = signal.getsignal(signal.SIGINT)  # ignored when the tests were started as a background job
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        paused = asyncio.run(serve_stopped_while_starting(monkeypatch))
    assert paused  # stopped the way a stop once serving does: its schedule paused
    assert signal.getsignal(signal.SIGINT) is before  # put back


def orch_prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "prefect"), *args], env=env, capture_output=True, text=True, timeout=120)


def test_deployment_runs_through_a_process_worker(server: Server, tmp_path: Path) -> None:
    config = sample(tmp_path, name="wcalc")
    with ScriptedModel(demo_scenario()) as model:
        env = env_for(server, model, tmp_path / "home")
        deployed = orch(env, "deploy", "-c", str(config))
        assert deployed.returncode == 0 and "project-cycle/wcalc" in deployed.stdout, deployed.stdout + deployed.stderr
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "orchestrator"], env=env, cwd=tmp_path,
            stdout=(tmp_path / "worker.log").open("w"), stderr=subprocess.STDOUT,
        )
        try:
            run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "project-cycle/wcalc", "--watch",
                                  "--watch-timeout", "150"], env=env, capture_output=True, text=True, timeout=200)
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:  # Prefect's own worker once hung on SIGTERM (idle, in CI)
                worker.kill()
                worker.wait()
    assert run.returncode == 0 and "Completed" in run.stdout, run.stdout + (tmp_path / "worker.log").read_text()
    [cycle] = cycles(config, "wcalc")
    assert cycle.status == "done"
    assert cycle.summary is not None and len(cycle.summary.merged) == 2


def test_doctor_names_the_database_and_warns_when_hosts_share_sqlite(server: Server, tmp_path: Path) -> None:
    config = sample(tmp_path, name="dcalc")
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(tmp_path / "home")}

    def said() -> str:
        out = orch(env, "doctor", "-c", str(config)).stdout
        return next(line for line in out.splitlines() if "Prefect server" in line)

    assert said().startswith("✓") and "database: SQLite" in said()
    # One worker per host, each in its own pool, as the README sets hosts up.
    workers = [subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", f"host-{name}", "--type", "process"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
               for name in ("a", "b")]
    try:
        line = wait_for(lambda: (found := said()).startswith("!") and found, "the warning", 90)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert "database: SQLite" in line and "host-a (1)" in line and "host-b (1)" in line
    assert "orch server --database-url postgresql+asyncpg://" in line


def test_deploy_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    config = sample(tmp_path)
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(tmp_path)}
    result = orch(env, "deploy", "-c", str(config))
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("Error: no Prefect server answers at http://127.0.0.1:9/api")


@needs.chromium
def test_the_ui_tells_the_story_of_a_cycle(server: Server, tmp_path: Path) -> None:
    config = sample(tmp_path, name="uicalc")
    with ScriptedModel(demo_scenario()) as model:
        ran = orch(env_for(server, model, tmp_path / "home"), "run", "-p", "uicalc", "-c", str(config))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    [cycle] = cycles(config, "uicalc")
    with Chromium() as browser:
        browser.open(f"{server.ui_url}/runs/flow-run/{cycle.flow_run_id}")
        # The run is named after its project; its logs name each step by task title.
        browser.wait_for_text("uicalc", "Completed", "work: Make add faster", "judge: Add shout helper",
                              "merge: uicalc")
        browser.click_text("Artifacts")
        browser.wait_for_text("plan-uicalc", "verdicts-uicalc", "summary-uicalc", "progress-uicalc",
                              "8 of 8 steps done")
        browser.open(f"{server.ui_url}/artifacts/artifact/{artifact_id(server, 'summary-uicalc')}")
        browser.wait_for_text(f"Cycle {cycle.id} of uicalc: done", "Not merged", "tests pass on the base",
                              "Total: $")
        browser.open(f"{server.ui_url}/artifacts/artifact/{artifact_id(server, 'verdicts-uicalc')}")
        browser.wait_for_text("Make add faster", "fail", "Add mean function", "pass")
