"""One cycle of a project at a time: two `orch run` at once, and a dead holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.adapters.lock import CycleLock
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import ScriptedModel

pytestmark = pytest.mark.guarantee

ORCH = str(Path(sys.executable).with_name("orch"))


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    first, second = CycleLock(tmp_path, "app"), CycleLock(tmp_path, "app")
    assert first.acquire()
    assert not second.acquire()
    assert f"pid {os.getpid()}" in second.holder()
    first.release()
    assert second.acquire()
    second.release()


def test_a_killed_holder_leaves_the_project_free(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from orchestrator.adapters.lock import CycleLock;"
         f" assert CycleLock(Path({str(tmp_path)!r}), 'app').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert not CycleLock(tmp_path, "app").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert CycleLock(tmp_path, "app").acquire()


@pytest.mark.slow
@pytest.mark.usefixtures("agent_env")
@pytest.mark.usefixtures("prefect_harness")
def test_a_second_orch_run_says_so_and_leaves_or_waits(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    config = write_portfolio(tmp_path, make_sample_project(tmp_path))
    store = Store.for_project(tmp_path / "data", "calc")
    # Slow answers keep the first cycle running while the second one starts.
    with ScriptedModel(demo_scenario(latency_s=0.4)) as model:
        # The session's Prefect server: no run waits for a server of its own to start.
        env = {**os.environ, **model.env(), "PREFECT_API_URL": str(PREFECT_API_URL.value())}

        def start(*extra: str) -> subprocess.Popen[str]:
            return subprocess.Popen([ORCH, "run", "-p", "calc", "-c", str(config), *extra], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        first = start()
        deadline = time.monotonic() + 60
        while store.unfinished_cycle() is None:
            assert time.monotonic() < deadline and first.poll() is None, "the first cycle never started"
            time.sleep(0.2)
        second = subprocess.run([ORCH, "run", "-p", "calc", "-c", str(config)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0
        assert "a cycle of 'calc' is already running (pid" in second.stdout, second.stdout + second.stderr
        output, _ = first.communicate(timeout=120)
        assert first.returncode == 0, output
        assert [c.status for c in store.list_cycles()] == ["done"]

        # Asked to wait, the second one runs its cycle after the first.
        first = start()
        while store.unfinished_cycle() is None:
            time.sleep(0.2)
        waiting = start("--wait")
        for run in (first, waiting):
            output, _ = run.communicate(timeout=120)
            assert run.returncode == 0, output
    cycles = store.list_cycles()
    assert [c.status for c in cycles] == ["done", "done", "done"]
    newest, middle = cycles[0], cycles[1]
    assert middle.finished_at is not None and newest.started_at >= middle.finished_at  # one after the other, never together
