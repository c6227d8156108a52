"""A project with nothing left to do costs nothing: its cycles end before any step, agent or worktree."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cycles import commit_file, run_cycle, sample_config, use_model

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import ScriptedModel
from orchestrator.domain.models import CycleStatus, TaskStatus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]


def test_idle_cycles_ask_no_planner_until_main_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = sample_config(tmp_path, max_task_attempts=1)
    store = Store.for_project(tmp_path / "data", "calc")
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)

        def planner_sessions() -> int:
            return len({r.session_id for r in model.requests if r.role == "planner"})

        first = run_cycle(config)
        assert first.status is CycleStatus.done and len(first.merged) == 2  # the bad task failed for good
        # Main moved: the planner is asked once more, and proposes nothing that may run.
        second = run_cycle(config)
        assert second.status is CycleStatus.done and not second.planned and not second.worked
        assert planner_sessions() == 2
        assert store.state().found_work_at is not None and store.state().planned_inputs

        worktrees = tmp_path / "calc" / ".orch" / "worktrees"
        before = sorted(worktrees.iterdir()) if worktrees.exists() else []
        took, cpu = [], time.process_time()
        for _ in range(8):
            started = time.perf_counter()
            idle = run_cycle(config)
            took.append(time.perf_counter() - started)
            assert idle.status is CycleStatus.skipped and idle.message.startswith("nothing new to plan since")
        # A figure to read, not a target to assert: the flow run's start and end are included.
        print(f"idle cycles: {min(took):.2f}-{max(took):.2f} s wall, {(time.process_time() - cpu) / 8:.2f} s CPU each")
        assert planner_sessions() == 2
        assert len(store.list_cycles()) == 2  # no cycle was opened
        assert (sorted(worktrees.iterdir()) if worktrees.exists() else []) == before

        # A change on main: the next cycle plans again (and finds nothing it may run).
        commit_file(tmp_path / "calc", "CLAUDE.md", (tmp_path / "calc" / "CLAUDE.md").read_text() + "\nMore.\n")
        again = run_cycle(config)
        assert again.status is CycleStatus.done and planner_sessions() == 3
        assert run_cycle(config).status is CycleStatus.skipped

    assert [t.status for t in store.list_tasks() if t.title == "Make add faster"] == [TaskStatus.failed]
