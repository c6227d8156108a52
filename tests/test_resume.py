"""Re-entering a cycle whose process was killed reuses its finished steps."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.agent import session_uuid
from orchestrator.demo import demo_scenario, make_sample_project, write_portfolio
from orchestrator.models import TaskStatus
from orchestrator.scripted import RequestView, ScriptedModel, structured
from orchestrator.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

ORCH = str(Path(sys.executable).with_name("orch"))


def stall(view: RequestView) -> list[dict]:
    time.sleep(120)  # longer than the test waits: the process is killed meanwhile
    return [structured({"summary": "too late", "completed": True})]


def wait_for(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.2)


def test_killed_cycle_resumes_without_paying_again(tmp_path: Path, monkeypatch) -> None:
    project = make_sample_project(tmp_path)
    config = write_portfolio(tmp_path, project)
    scenario = demo_scenario()
    fast_finish = scenario.workers["Make add faster"]
    scenario.workers["Make add faster"] = [stall]
    with ScriptedModel(scenario) as model:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        env |= model.env() | {"PREFECT_HOME": str(tmp_path / "prefect-home")}
        proc = subprocess.Popen([ORCH, "run", "--project", "calc", "--config", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            finished = lambda: sum(1 for r in model.requests if r.role == "worker" and r.turn == 2) == 2  # noqa: E731
            wait_for(finished)
            time.sleep(3)  # let Prefect persist the two finished work results
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        before = list(model.requests)

        scenario.workers["Make add faster"] = fast_finish
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        from flows.project_cycle import project_cycle

        summary = asyncio.run(project_cycle(project="calc", config=str(config)))
        after = model.requests[len(before):]

    store = Store.for_project(tmp_path / "data", "calc")
    assert len(store.list_cycles()) == 1 and summary.status == "done"  # the same cycle, finished
    assert not [r for r in after if r.role == "planner"]  # the plan was not paid for again
    tasks = {t.title: t for t in store.list_tasks()}
    rerun = {r.key for r in after if r.role == "worker"}
    assert rerun == {"Make add faster"}  # finished workers were not run again
    slow = tasks["Make add faster"]
    cut_off = session_uuid("calc", summary.cycle_id, slow.id, "worker", 1)
    assert {r.session_id for r in after if r.role == "worker"} == {cut_off}  # resumed, not restarted
    assert tasks["Add shout helper"].status is TaskStatus.done
    assert tasks["Add mean function"].status is TaskStatus.done
    assert tasks["Make add faster"].status is TaskStatus.pending  # rejected by the gate, as always
    assert not store.list_tasks(TaskStatus.in_progress)
