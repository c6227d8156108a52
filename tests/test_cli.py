"""The ``orch`` command line, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cycles import as_in_a_terminal
from orch_cli import orch

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import ScriptedModel
from orchestrator.domain.models import Task, TaskStatus

ORCH = str(Path(sys.executable).with_name("orch"))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    init_repo(tmp_path / "app", {"README.md": "# app\n"})
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps({"data_dir": "data", "projects": [{"name": "app", "path": "app"}]}))
    return path


def test_add_task_then_list_and_filter(config: Path, capsys, monkeypatch) -> None:
    code, out = orch(capsys, monkeypatch, "add-task", "--project", "app", "--title", "Fix parser",
                     "--desc", "The parser drops the last line.", "--type", "fix", "--config", str(config))
    assert code == 0 and "Added task" in out
    code, out = orch(capsys, monkeypatch, "tasks", "--project", "app", "--config", str(config))
    assert code == 0 and "Fix parser" in out and "pending" in out and "fix" in out
    code, out = orch(capsys, monkeypatch, "tasks", "--project", "app", "--status", "done", "--config", str(config))
    assert code == 0 and "Fix parser" not in out


def test_tasks_come_a_page_at_a_time_live_ones_first(config: Path, capsys, monkeypatch) -> None:
    store = Store.for_project(config.parent / "data", "app")
    for title, status, priority in [("Old win", TaskStatus.done, 1), ("Gave up", TaskStatus.failed, 1),
                                    ("Later", TaskStatus.pending, 5), ("Now", TaskStatus.in_progress, 3),
                                    ("Next", TaskStatus.pending, 1)]:
        store.add_task(Task(title=title, status=status, priority=priority))
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "app", "-n", "3", "--config", str(config))
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()[2:5]]  # under the title and header
    assert code == 0 and [r[5] for r in rows] == ["Now", "Next", "Later"]
    assert "Showing 3 of 5 tasks" in out
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "app", "-n", "0", "--json", "--config", str(config))
    assert [t["title"] for t in json.loads(out)] == ["Now", "Next", "Later", "Gave up", "Old win"]


def test_config_from_environment(config: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ORCH_CONFIG", str(config))
    code, out = orch(capsys, monkeypatch, "status")
    assert code == 0 and "app" in out


def test_status_pause_and_resume(config: Path, capsys, monkeypatch) -> None:
    assert orch(capsys, monkeypatch, "add-task", "-p", "app", "--title", "One", "-c", str(config))[0] == 0
    code, out = orch(capsys, monkeypatch, "pause", "--project", "app", "--config", str(config), "--reason", "holiday")
    assert code == 0 and "Paused app" in out
    code, out = orch(capsys, monkeypatch, "status", "--config", str(config))
    assert code == 0 and "app: paused: holiday" in out
    row = re.split(r"\s{2,}", next(line for line in out.splitlines() if line.startswith("app ")))
    assert row[1:3] == ["paused", "1"]  # one pending task
    assert orch(capsys, monkeypatch, "resume", "--project", "app", "--config", str(config))[0] == 0
    assert "holiday" not in orch(capsys, monkeypatch, "status", "--config", str(config))[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks", "--project", "nope"], "Error: unknown project 'nope'"),
        (["pause", "--project", "nope"], "Error: unknown project 'nope'"),
        (["add-task", "--project", "app", "--title", "  "], "Error: --title must not be empty"),
    ],
)
def test_errors_are_one_line(config: Path, capsys, monkeypatch, args: list[str], message: str) -> None:
    code, out = orch(capsys, monkeypatch, *args, "--config", str(config))
    assert code == 1
    assert out.strip().startswith(message) and len(out.strip().splitlines()) == 1


def test_bad_config_and_bad_status_fail_clearly(tmp_path: Path, config: Path, capsys, monkeypatch) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"projects": [\n  {"name": "x",}\n]}')
    code, out = orch(capsys, monkeypatch, "status", "--config", str(broken))
    assert code == 1 and "invalid JSON at line 2, column" in out
    code, out = orch(capsys, monkeypatch, "status", "--config", str(tmp_path / "missing.json"))
    assert code == 1 and "file not found" in out
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "app", "--status", "bogus", "--config", str(config))
    assert code == 2 and "bogus" in out


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_run_prints_the_cycle_and_skips_paused_projects(tmp_path: Path, capsys, monkeypatch) -> None:
    config = write_portfolio(tmp_path, make_sample_project(tmp_path))
    with ScriptedModel(demo_scenario()) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        code, out = orch(capsys, monkeypatch, "run", "--project", "calc", "--config", str(config))
        assert code == 0, out
        assert "planned 3, worked 3, passed 2, merged 2" in out
        orch(capsys, monkeypatch, "pause", "--project", "calc", "--config", str(config))
        requests = len(model.requests)
        code, out = orch(capsys, monkeypatch, "run", "--project", "calc", "--config", str(config))
        assert code == 0 and "is paused" in out
        assert len(model.requests) == requests  # a paused project costs nothing


def newcomer_env(home: Path) -> dict[str, str]:
    """The environment of someone new: a fresh HOME, no Prefect, model or orchestrator settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_", "PREFECT_", "ORCH_", "XDG_"))}
    home.mkdir()
    return {**env, "HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def server_pid(data_dir: Path) -> int:
    """The pid of the Prefect server the demo started (it notes it as `orch start` does)."""
    return int(json.loads((data_dir / "prefect" / "server.json").read_text())["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()[:1] != "Z"


@pytest.mark.slow
def test_demo_command_from_a_fresh_process(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    proc = subprocess.run([ORCH, "demo", "--dir", str(demo)], env=newcomer_env(tmp_path / "home"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "planned 3, worked 3, passed 2, merged 2" in proc.stdout
    # The rejection names the failing test, not a cut-off header of the output.
    assert "fail on the branch (exit 1): test_add (test_calc.AddTest" in proc.stdout
    assert "Error" not in proc.stdout + proc.stderr  # nor a log line the stopped server missed
    assert (demo / "calc" / ".orch" / "verdicts").is_dir()
    assert (demo / "data" / "calc.db").is_file()
    assert not alive(server_pid(demo / "data"))  # the server it started is stopped


@pytest.mark.slow
def test_demo_ui_keeps_its_server_up_and_points_at_the_cycle(tmp_path: Path) -> None:
    import urllib.request

    demo = tmp_path / "demo"
    # PYTHONFAULTHANDLER: on SIGABRT, every thread's stack goes to its output (see below).
    env = {**newcomer_env(tmp_path / "home"), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([ORCH, "demo", "--ui", "--dir", str(demo)], env=env, preexec_fn=as_in_a_terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl+C" in line:
                break
        out = "".join(lines)
        [run_url] = re.findall(r"The cycle's run: (http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36})", out)
        ui_url, run_id = run_url.split("/runs/flow-run/")
        with urllib.request.urlopen(f"{ui_url}/api/flow_runs/{run_id}", timeout=10) as response:
            assert json.loads(response.read())["state"]["type"] == "COMPLETED"
        page = urllib.request.Request(run_url, headers={"Accept": "text/html"})  # as a browser asks
        with urllib.request.urlopen(page, timeout=10) as response:  # the UI serves the page
            assert response.status == 200 and "<html" in response.read().decode().lower()
        pid = server_pid(demo / "data")
        assert alive(pid) and proc.poll() is None
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        # Read its output to the end: a demo whose pipe is full blocks on its next write.
        try:
            rest = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:  # say where it hangs
            signals = [line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("Sig")]
            proc.send_signal(signal.SIGABRT)
            rest = proc.communicate(timeout=30)[0]
            raise AssertionError(f"orch demo --ui ignored Ctrl+C for 60 s ({', '.join(signals)}); "
                                 f"its output since, with stacks:\n{rest[-20000:]}") from None
        assert proc.returncode == 0, rest
        assert not alive(pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # stops its server as Ctrl+C does
            proc.wait(60)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_orch_run_uses_the_server_orch_start_left_running(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    config = write_portfolio(tmp_path, make_sample_project(tmp_path))
    # Where `orch start` notes the server it started (here: the session's test server).
    (tmp_path / "data" / "prefect").mkdir(parents=True)
    (tmp_path / "data" / "prefect" / "server.json").write_text(json.dumps({"api_url": str(PREFECT_API_URL.value())}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with ScriptedModel(demo_scenario()) as model:
        proc = subprocess.run([ORCH, "run", "-p", "calc", "-c", str(config)], env={**env, **model.env()},
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [cycle] = Store.for_project(tmp_path / "data", "calc").list_cycles()

    async def flow_run_state() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(cycle.flow_run_id)).state_name or ""

    assert asyncio.run(flow_run_state()) == "Completed"  # the run is in that server, not a temporary one


@pytest.mark.parametrize("command", ["start", "deploy"])
def test_nothing_to_serve_is_an_error(tmp_path: Path, capsys, monkeypatch, command: str) -> None:
    init_repo(tmp_path / "app", {"README.md": "# app\n"})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "enabled": False}]}))
    code, out = orch(capsys, monkeypatch, command, "--config", str(config))
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert out.startswith(f"Error: {config}: no enabled project to deploy")


@pytest.mark.slow
def test_a_temporary_server_that_does_not_start_is_one_error_line(tmp_path: Path) -> None:
    config = write_portfolio(tmp_path, make_sample_project(tmp_path))
    env = {**newcomer_env(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}  # too short for any start
    proc = subprocess.run([ORCH, "run", "-p", "calc", "-c", str(config)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert (proc.stdout + proc.stderr).strip() == (
        "Error: the temporary Prefect server did not start in 1 s: start one with `prefect server start` "
        "(or `orch start`) and run again; `orch doctor` checks the set-up")
    assert Store.for_project(tmp_path / "data", "calc").list_cycles() == []


_LEFT_WAITING = """
import threading, sys
from orchestrator.cli import main as cli
from orchestrator.domain.errors import OrchestratorError
cli.EXIT_GRACE_S = 1

def command(**_):  # done, but leaves a thread waiting for ever, as a library can
    threading.Thread(target=threading.Event().wait, name="left waiting").start()
    if sys.argv[1] == "fails":
        raise OrchestratorError("it failed")
    return 0

cli.app = command
cli.main()
"""


@pytest.mark.parametrize(("outcome", "code"), [("succeeds", 0), ("fails", 1)])
def test_a_thread_left_waiting_does_not_keep_orch_from_exiting(outcome: str, code: int) -> None:
    done = subprocess.run([sys.executable, "-c", _LEFT_WAITING, outcome], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == code, done.stderr
    assert ("Error: it failed" in done.stdout) is (code == 1)
