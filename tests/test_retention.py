"""Retention: what finished cycles left goes after retention_days; nothing anything open needs."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from orch_cli import orch

from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.models import ApprovalStage, CycleStatus, CycleSummary, Task, TaskStatus
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.patrol import patrol

pytestmark = pytest.mark.guarantee

NOW = datetime.now(UTC)


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def touch(path: Path, days_old: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x" * 100)
    stamp = (NOW - timedelta(days=days_old)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    init_repo(tmp_path / "app", {"README.md": "# app\n"})
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps({"retention_days": 30, "projects": [{"name": "app", "path": "app"}]}))
    return path


def leftovers(config: Path) -> dict[str, Path]:
    """A data dir and audit trail with every kind of thing retention meets, by name."""
    ctx = ProjectContext.open(ProjectRef(project="app", config_path=str(config)))
    store, orch_dir = ctx.store, ctx.orch_dir
    transcripts = config.parent / "data" / "claude" / "projects" / "-app-worktree"
    for cycle_id, started, finished in (("old", 41, 40), ("recent", 2, 1)):
        store.start_cycle(cycle_id, "a" * 40)
        store.finish_cycle(CycleSummary(project="app", cycle_id=cycle_id, status=CycleStatus.done))
        store.update_cycle(cycle_id, started_at=ago(started), finished_at=ago(finished))
    store.start_cycle("waiting", "b" * 40)  # waits for approval since long ago: never finished
    store.update_cycle("waiting", started_at=ago(40), status=CycleStatus.waiting.value)
    store.request_approval("waiting", ApprovalStage.merge, deadline=ago(-1), default="reject", flow_run_id="run-w")
    tasks = {"done": TaskStatus.done, "pending": TaskStatus.pending, "review": TaskStatus.in_review,
             "fresh": TaskStatus.done}
    for name, status in tasks.items():
        store.add_task(Task(id=name, title=name))  # its last change long ago, as the store keeps it
        store.db["tasks"].update(name, {"status": status.value, "updated_at": ago(1 if name == "fresh" else 40)})
    sessions = {"s-done": ("old", "done"), "s-planner": ("old", ""), "s-pending": ("old", "pending"),
                "s-review": ("old", "review"), "s-waiting": ("waiting", ""), "s-fresh": ("recent", "fresh")}
    for session, (cycle_id, task_id) in sessions.items():
        store.record_cost(session, cycle_id, task_id, "worker", "sonnet", 0.1)
    things = {s: touch(transcripts / f"{s}.jsonl", 40) for s in sessions}
    things["s-done folder"] = touch(transcripts / "s-done" / "subagents" / "agent-1.jsonl", 40).parents[1]
    for folder, name in (("plans", "cycle_old"), ("merges", "cycle_old"), ("plans", "cycle_recent"),
                         ("plans", "cycle_waiting"), ("workers", "done"), ("verdicts", "done"),
                         ("workers", "pending"), ("workers", "review"), ("workers", "fresh")):
        things[f"{folder}/{name}"] = touch(orch_dir / folder / f"{name}.md")
    results = config.parent / "data" / "results"
    # The waiting cycle started 40 days ago: results since may be replayed when it goes on.
    things.update({"result 50 days": touch(results / "a", 50), "result 35 days": touch(results / "b", 35),
                   "result today": touch(results / "c")})
    ctx.close()
    return things


GONE = {"s-done", "s-done folder", "s-planner", "plans/cycle_old", "merges/cycle_old", "workers/done",
        "verdicts/done", "result 50 days"}


def test_the_patrol_removes_what_is_past_retention_and_nothing_an_open_thing_needs(config: Path) -> None:
    things = leftovers(config)
    with ProjectContext.open(ProjectRef(project="app", config_path=str(config))) as ctx:
        report = patrol(ctx)
    assert {name for name, path in things.items() if not path.exists()} == GONE
    assert report.collected == len(GONE)

    # Once the open tasks are finished (long ago), their sessions and files go too; from then on
    # the cycles already collected are not looked at again.
    with ProjectContext.open(ProjectRef(project="app", config_path=str(config))) as ctx:
        assert ctx.store.state().collected_through is None  # the old cycle still held something
        for name in ("pending", "review"):
            ctx.store.db["tasks"].update(name, {"status": TaskStatus.done.value, "updated_at": ago(35)})
        assert patrol(ctx).collected == 4
        assert ctx.store.state().collected_through == ctx.store.get_cycle("old").finished_at
        assert ctx.store.cycles_finished_between(ctx.store.state().collected_through or "", NOW.isoformat()) == [
            ctx.store.get_cycle("recent")]
    assert {name for name, path in things.items() if not path.exists()} == GONE | {
        "s-pending", "s-review", "workers/pending", "workers/review"}


def test_orch_gc_says_what_would_go_then_removes_it(config: Path, capsys, monkeypatch) -> None:
    things = leftovers(config)
    code, out = orch(capsys, monkeypatch, "gc", "--dry-run", "-c", str(config))
    assert code == 0, out
    assert "app: would remove what cycles that ended before" in out and "3 transcripts, 4 audit files" in out
    assert "Would remove 1 step results" in out
    assert all(path.exists() for path in things.values())  # a dry run removes nothing

    code, out = orch(capsys, monkeypatch, "gc", "-c", str(config))
    assert code == 0 and "app: removed what cycles" in out, out
    assert {name for name, path in things.items() if not path.exists()} == GONE


def test_retention_days_0_keeps_everything(config: Path, capsys, monkeypatch) -> None:
    data = json.loads(config.read_text())
    data["projects"][0]["retention_days"] = 0  # the project's own setting wins over the portfolio's 30
    config.write_text(json.dumps(data))
    things = leftovers(config)
    code, out = orch(capsys, monkeypatch, "gc", "-c", str(config))
    assert code == 0 and "app: keeps everything" in out and "Removed 0 step results" in out, out
    assert all(path.exists() for path in things.values())
