"""Patrol: dead cycles closed, stray tasks sent back, orphans removed, failing projects paused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.leash import PROJECT_ENV
from orchestrator.domain.models import Task, TaskStatus
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.patrol import patrol, pause_if_failing

pytestmark = pytest.mark.guarantee


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ctx(tmp_path: Path) -> ProjectContext:
    init_repo(tmp_path / "app", {"README.md": "# app\n"})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [
        {"name": "app", "path": "app", "max_consecutive_failures": 2, "max_task_attempts": 2}]}))
    return ProjectContext.open(ProjectRef(project="app", config_path=str(config)))


def test_patrol_tidies_what_dead_runs_left_and_keeps_the_cycle_to_resume(ctx: ProjectContext) -> None:
    store, repo, base = ctx.store, ctx.repo, ctx.repo.head()
    # Priorities make each claim take the task it names.
    store.add_task(Task(id="ghost1", title="Held by a cycle the store never recorded", priority=1, max_attempts=1))
    store.claim_tasks("ghost", 1)
    store.add_task(Task(id="old1", title="Held by a dead cycle", priority=2, max_attempts=2))
    store.start_cycle("dead", base, flow_run_id="run-dead")
    store.claim_tasks("dead", 1)
    store.update_cycle("dead", claimed=["old1"])
    store.update_cycle("dead", started_at="2020-01-01T00:00:00+00:00")
    store.add_task(Task(id="new1", title="Held by the cycle to resume", priority=3, max_attempts=2))
    store.start_cycle("live", base, flow_run_id="run-live")
    store.claim_tasks("live", 1)
    store.update_cycle("live", claimed=["new1"])
    store.add_task(Task(id="done1", title="Merged long ago", priority=4))
    store.claim_tasks("older", 1)
    store.complete_task("done1", "c" * 40)
    for name in ("old1", "new1", "done1", "base-dead", "base-live", "stray"):
        repo.add_worktree(name, ctx.branch(name), base)

    report = patrol(ctx)

    assert report.abandoned_cycles == ["dead"]
    assert store.get_cycle("dead").status == "failed" and store.get_cycle("live").status == "running"
    assert set(report.dead_flow_runs) == {"run-dead", "run-live"}
    old = store.get_task("old1")  # given back when its cycle was closed, with an attempt left
    assert old.status is TaskStatus.pending and old.last_failure.startswith("cycle dead failed: abandoned")
    assert report.sent_back == ["ghost1"]
    ghost = store.get_task("ghost1")  # no attempt left: failed for good, and counted in the streak
    assert ghost.status is TaskStatus.failed and "died" in ghost.last_failure
    assert store.get_task("new1").status is TaskStatus.in_progress  # the resumed cycle still holds it
    kept = sorted(p.name for p in repo.list_worktrees())
    assert kept == ["base-live", "new1"]
    assert sorted(repo.list_orch_branches("orch")) == ["orch/base-live", "orch/new1"]
    assert git(repo.path, "status", "--porcelain") == ""  # the user's checkout is untouched


def test_patrol_kills_agent_processes_a_crashed_run_left_and_no_others(ctx: ProjectContext, tmp_path: Path) -> None:
    # What a tool's command looks like after the run and its leash were SIGKILLed: adopted by
    # init, still marked with the project's repository as every process of its sessions is.
    nap = [sys.executable, "-c", "import time; time.sleep(300)"]
    ours = subprocess.Popen(nap, env={**os.environ, PROJECT_ENV: str(ctx.repo.path)})
    other = subprocess.Popen(nap, env={**os.environ, PROJECT_ENV: str(tmp_path / "another")})
    try:
        for proc in (ours, other):  # started: its environment reads back (it is empty mid-exec)
            while f"{PROJECT_ENV}=".encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes():
                time.sleep(0.05)
        report = patrol(ctx)
        assert report.reaped == [ours.pid]
        assert ours.wait(10) == -signal.SIGKILL
        assert other.poll() is None  # another project's session is not this patrol's business
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_a_failure_streak_pauses_the_project_until_resumed(ctx: ProjectContext) -> None:
    store = ctx.store
    for task_id in ("a", "b", "c"):
        store.add_task(Task(id=task_id, title=task_id, max_attempts=1))
    store.claim_tasks("c1", 3)
    store.fail_attempt("a", "tests failed")
    assert pause_if_failing(ctx) == ""  # one failure is not a streak
    store.complete_task("b", "d" * 40)  # a success ends it
    store.fail_attempt("c", "tests failed")
    assert pause_if_failing(ctx) == "" and store.state().consecutive_failures == 1
    store.add_task(Task(id="d", title="d", max_attempts=1))
    store.claim_tasks("c2", 1)
    store.fail_attempt("d", "tests failed")
    store.fail_attempt("d", "the same failure recorded twice")  # counted once
    reason = pause_if_failing(ctx)
    assert reason.startswith("2 tasks failed in a row")
    state = store.state()
    assert state.paused and state.paused_reason == reason
    store.set_paused(False)
    assert store.state().consecutive_failures == 0 and pause_if_failing(ctx) == ""


@pytest.mark.slow  # it starts a Prefect server, as the slow tier's tests do (they share it)
@pytest.mark.usefixtures("prefect_harness")
def test_a_dead_runs_flow_run_is_marked_crashed() -> None:
    from prefect import flow, get_client
    from prefect.states import Completed, Running

    from tasks.patrol import mark_crashed

    @flow(name="died-here")
    def died() -> None: ...

    async def scenario() -> tuple[str, str]:
        async with get_client() as client:
            stuck = await client.create_flow_run(died, state=Running())  # as a SIGKILL leaves it
            finished = await client.create_flow_run(died, state=Completed())
            await mark_crashed([str(stuck.id), str(finished.id)])
            return tuple([(await client.read_flow_run(r.id)).state.type.value for r in (stuck, finished)])

    assert asyncio.run(scenario()) == ("CRASHED", "COMPLETED")  # a finished run is left as it was


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_projects_ended_runs_go_with_their_artifacts_and_nothing_else() -> None:
    from datetime import UTC, datetime, timedelta

    from prefect import flow, get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.states import Completed, Paused

    from tasks.runs import delete_runs, old_runs

    @flow(name="project-cycle")
    def cycle() -> None: ...

    project = f"gc-{uuid.uuid4().hex[:8]}"  # the server is shared with other tests' cycles

    async def scenario() -> tuple[list[str], list[bool]]:
        async with get_client() as client:
            ended = await client.create_flow_run(cycle, name=project, state=Completed())
            waiting = await client.create_flow_run(cycle, name=project, state=Paused())  # an approval it waits for
            other = await client.create_flow_run(cycle, name=f"{project}-other", state=Completed())
            await client.create_artifact(ArtifactCreate(key=f"plan-{project}", type="markdown", data="# plan",
                                                        flow_run_id=ended.id))
            found = await old_runs(project, datetime.now(UTC) + timedelta(days=1))
            await delete_runs(found)
            left = await client.read_flow_runs()
            artifacts = await client.read_artifacts()
            return [str(r.id) for r in found], [
                ended.id in {r.id for r in left}, waiting.id in {r.id for r in left},
                other.id in {r.id for r in left}, any(a.flow_run_id == ended.id for a in artifacts)]

    found, (ended_left, waiting_left, other_left, artifact_left) = asyncio.run(scenario())
    assert len(found) == 1 and not ended_left and not artifact_left
    assert waiting_left and other_left
