"""Re-entering a cycle whose process was killed reuses its finished steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from cycles import run_watched

from orchestrator.adapters.agent import session_uuid
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import RequestView, ScriptedModel, structured
from orchestrator.domain.models import TaskStatus

pytestmark = [pytest.mark.guarantee, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

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

        summary = run_watched(project_cycle(project="calc", config=str(config)))
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
    shout = tasks["Add shout helper"]
    assert shout.status is TaskStatus.done, (shout.attempts, shout.waiting, shout.last_failure)
    assert tasks["Add mean function"].status is TaskStatus.done
    assert tasks["Make add faster"].status is TaskStatus.pending  # rejected by the checks, as always
    assert not store.list_tasks(TaskStatus.in_progress)


def run_until_killed(config: Path, model: ScriptedModel, home: Path, reached) -> None:
    """Start `orch run` in its own process; SIGKILL it once ``reached()`` is true."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= model.env() | {"PREFECT_HOME": str(home)}
    proc = subprocess.Popen([ORCH, "run", "--project", "calc", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(reached)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def rerun(config: Path, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch):
    from flows.project_cycle import project_cycle

    for key, value in model.env().items():
        monkeypatch.setenv(key, value)
    return run_watched(project_cycle(project="calc", config=str(config)))


def assert_tidy(project: Path, store: Store) -> None:
    """No task in progress, no orphan worktree or branch, main green in the user's checkout."""
    assert not store.list_tasks(TaskStatus.in_progress)
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True, text=True).stdout
    assert worktrees.count("\n") == 1
    branches = subprocess.run(["git", "branch", "--list", "orch/*"], cwd=project, capture_output=True, text=True)
    assert branches.stdout.strip() == ""
    green = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, capture_output=True, text=True)
    assert green.returncode == 0, green.stderr


def test_killed_while_planning_resumes_the_planner_session(tmp_path: Path, monkeypatch) -> None:
    project = make_sample_project(tmp_path)
    config = write_portfolio(tmp_path, project)
    scenario = demo_scenario()
    final_turn = scenario.planner[-1]
    asked = threading.Event()

    def last_turn_stalls(view: RequestView) -> list[dict]:
        asked.set()  # a request is recorded only once answered: say it arrived
        return stall(view)

    scenario.planner[-1] = last_turn_stalls
    with ScriptedModel(scenario) as model:
        run_until_killed(config, model, tmp_path / "prefect-home", asked.is_set)
        before = len(model.requests)
        scenario.planner[-1] = final_turn  # the cut-off turn is answered now
        summary = rerun(config, model, monkeypatch)
        first, after = model.requests[:before], model.requests[before:]
    assert summary.status == "done" and len(summary.merged) == 2
    assert {r.session_id for r in after if r.role == "planner"} == {r.session_id for r in first if r.role == "planner"}
    # The two planner turns answered before the kill were not asked for again: the session resumed.
    planner_turns = [r.turn for r in after if r.role == "planner"]
    assert planner_turns and min(planner_turns) >= 2
    store = Store.for_project(tmp_path / "data", "calc")
    assert len(store.list_tasks()) == 3 and len(store.list_cycles()) == 1  # no duplicate tasks or cycles
    assert_tidy(project, store)


def test_killed_while_merging_merges_once_and_keeps_main_green(tmp_path: Path, monkeypatch) -> None:
    project = make_sample_project(tmp_path)
    config = write_portfolio(tmp_path, project)
    settings = json.loads(config.read_text())
    tests = settings["projects"][0]["test_command"]
    marker = tmp_path / "merging"
    # The first run hangs in the merged result's tests, the one place only the merge step runs them
    # (without the test cache, nothing tests it ahead of the merge).
    settings["projects"][0]["test_command"] = (
        f'case "$PWD" in */integration-*) touch {marker}; sleep 120;; esac; {tests}'
    )
    settings["projects"][0]["test_cache"] = False
    config.write_text(json.dumps(settings))
    with ScriptedModel(demo_scenario()) as model:
        run_until_killed(config, model, tmp_path / "prefect-home", marker.exists)
        before = len(model.requests)
        main_before = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout
        settings["projects"][0]["test_command"] = tests
        config.write_text(json.dumps(settings))
        summary = rerun(config, model, monkeypatch)
        after = model.requests[before:]
    assert summary.status == "done" and len(summary.merged) == 2
    assert after == []  # planner, workers and reviews all reused: only the merge ran again
    log = subprocess.run(["git", "log", "--format=%s", f"{main_before.strip()}..HEAD"], cwd=project,
                         capture_output=True, text=True).stdout.splitlines()
    assert len([line for line in log if line.startswith("Merge ")]) == 2  # each branch merged once
    store = Store.for_project(tmp_path / "data", "calc")
    assert len(store.merged_task_ids(summary.cycle_id)) == 2
    assert_tidy(project, store)


def test_killed_while_judging_reuses_finished_reviews_and_resumes_the_cut_one(tmp_path: Path, monkeypatch) -> None:
    project = make_sample_project(tmp_path)
    config = write_portfolio(tmp_path, project)
    scenario = demo_scenario()
    approve = scenario.judge[0]
    stalled = threading.Event()

    def review(view: RequestView) -> list[dict]:
        if "Add mean function" in view.prompt:
            stalled.set()
            return stall(view)
        return approve(view)

    scenario.judge = [review, approve]  # a second turn when it waits for the tests
    database = tmp_path / "data" / "calc.db"
    with ScriptedModel(scenario) as model:
        def one_review_done_one_cut() -> bool:
            if not (stalled.is_set() and database.exists()):
                return False
            with closing(Store(database, "calc")) as store:
                return any(v.passed for v in store.verdicts())

        run_until_killed(config, model, tmp_path / "prefect-home", one_review_done_one_cut)
        before = len(model.requests)
        reviewed = {r.session_id for r in model.requests if r.role == "judge"}
        scenario.judge = [approve, approve]
        summary = rerun(config, model, monkeypatch)
        after = model.requests[before:]
    assert summary.status == "done" and len(summary.merged) == 2
    assert {r.role for r in after} == {"judge"}  # no planner or worker asked again
    store = Store.for_project(tmp_path / "data", "calc")
    mean = next(t for t in store.list_tasks() if t.title == "Add mean function")
    cut = session_uuid("calc", summary.cycle_id, mean.id, "judge", 1)
    # The cut review went on under its own id (a session id cannot start twice): resumed, not restarted.
    assert {r.session_id for r in after} == {cut} and cut not in reviewed
    assert len(store.list_cycles()) == 1
    assert_tidy(project, store)


def test_killed_as_a_review_is_answered_the_branch_still_merges_on_its_first_attempt(
        tmp_path: Path, monkeypatch) -> None:
    project = make_sample_project(tmp_path)
    config = write_portfolio(tmp_path, project)
    database = tmp_path / "data" / "calc.db"
    with ScriptedModel(demo_scenario()) as model:
        def a_review_answered() -> bool:  # then killed at once: before or after the CLI wrote the answer down
            return any(r.role == "judge" for r in model.requests)

        run_until_killed(config, model, tmp_path / "prefect-home", a_review_answered)
        answered = next(r for r in model.requests if r.role == "judge")
        summary = rerun(config, model, monkeypatch)
    assert summary.status == "done" and len(summary.merged) == 2
    with closing(Store(database, "calc")) as store:
        for task in store.tasks_of(summary.merged):
            assert (task.status, task.attempts) == (TaskStatus.done, 1), task.last_failure
    # Written down, the answer was read back; if not, the cut review was asked once more, never twice.
    assert sum(1 for r in model.requests if r.session_id == answered.session_id) <= 2
