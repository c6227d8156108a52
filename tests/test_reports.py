"""The read commands (status, tasks, cycles, show, costs) on real SQLite stores.

Three projects: ``app`` with a finished and a running cycle, ``lib`` with a
failed cycle, ``empty`` with nothing. No agents and no Prefect: the next
scheduled runs come from a stand-in ``deployments.control`` module here;
tests/test_serving.py reads them from a real server.
"""

from __future__ import annotations

import json
import re
import sys
import types
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from orch_cli import orch

from deployments import server
from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.adapters.store import Store
from orchestrator.cli.reports import (
    CostDimension,
    cost_report,
    cycle_rows,
    cycle_story,
    status_rows,
)
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import (
    CheckResult,
    CycleStatus,
    CycleSummary,
    Task,
    TaskStatus,
    TaskWait,
    Verdict,
    WorkResult,
)

DONE, RUNNING, FAILED = "a1b2c3d4e5f6", "a1ff00000000", "a1c0ffee0000"
MERGE = "e" * 40
DIFF = " calc.py | 2 +-\n 1 file changed, 1 insertion(+), 1 deletion(-)\n"


def orch_json(capsys, monkeypatch, *args: str) -> Any:
    code, out = orch(capsys, monkeypatch, *args, "--json")
    assert code == 0, out
    return json.loads(out)  # the whole output is one document


@pytest.fixture(autouse=True)
def prefect(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """A Prefect server as ``deployments`` sees it: up, with app's next run (not in UTC).

    Returns the calls made to ``next_runs``.
    """
    calls: list[tuple[str, list[str]]] = []
    run = datetime(2030, 1, 5, 14, 30, tzinfo=timezone(timedelta(hours=2)))

    def next_runs(api_url: str, projects: list[str]) -> dict[str, datetime]:
        calls.append((api_url, projects))
        return {"app": run}

    control = types.ModuleType("deployments.control")
    control.next_runs = next_runs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deployments.control", control)
    monkeypatch.setattr(server, "running_server", lambda data_dir: "http://prefect.test/api")
    return calls


def _cost(store: Store, session: str, cycle: str, task: str | None, role: str, model: str,
          cost: float, day: str) -> None:
    store.record_cost(session, cycle, task, role, model, cost)
    store.db.table("agent_costs").update(session, {"created_at": f"{day}T12:00:00+00:00"})


def _fill_app(store: Store) -> None:
    """A done cycle (t1 merged, t2 rejected by the judge) and a running one."""
    store.add_task(Task(id="t1", title="Fix the [parser]", cycle_id=DONE))
    store.add_task(Task(id="t2", title="Test subtraction", cycle_id=DONE))
    store.add_task(Task(id="t3", title="Later work", depends_on=["t2"]))
    store.start_cycle(DONE, "b" * 40)
    store.update_cycle(DONE, planned=["t1", "t2"], claimed=["t1", "t2"], plan_path="/app/.orch/plans/cycle_a1b2.md")
    store.claim_tasks(DONE, 2)
    for task, ok, cost in (("t1", True, 0.5), ("t2", False, 0.25)):
        store.record_work(WorkResult(task_id=task, cycle_id=DONE, attempt=1, branch=f"orch/{task}", base_commit="b",
                                     success=True, summary=f"did {task}", diff_stat=DIFF if ok else "", cost_usd=cost))
        # t1's tests failed once, then passed when run again
        tests = CheckResult(command="pytest", ran=True, passed=ok, runs=2, flaky_tests=["test_io.py::test_read"] if ok else [])
        store.record_verdict(Verdict(task_id=task, cycle_id=DONE, attempt=1, commit="c", passed=ok, cost_usd=0.1,
                                     reasons=["looks right"] if ok else ["tests fail on the branch"], tests=tests))
        _cost(store, f"w-{task}", DONE, task, "worker", "sonnet", cost, "2030-01-01")
        _cost(store, f"j-{task}", DONE, task, "judge", "haiku", 0.1, "2030-01-01")
    _cost(store, "plan", DONE, None, "planner", "opus", 1.0, "2030-01-01")
    store.record_merge(DONE, "t1", MERGE, resolved=True)
    store.complete_task("t1", MERGE)
    store.fail_attempt("t2", "judge rejected the change: tests fail on the branch")
    store.finish_cycle(CycleSummary(project="app", cycle_id=DONE, status=CycleStatus.done,
                                    rejected={"t2": "judge rejected"}))
    store.update_cycle(DONE, started_at="2030-01-01T10:00:00+00:00", finished_at="2030-01-01T10:03:05+00:00")
    store.start_cycle(RUNNING, "c" * 40)
    store.update_cycle(RUNNING, started_at="2030-01-03T08:00:00+00:00")


def _fill_lib(store: Store) -> None:
    store.start_cycle(FAILED, "d" * 40)
    _cost(store, "plan-lib", FAILED, None, "planner", "opus", 0.5, "2030-01-02")
    store.finish_cycle(CycleSummary(project="lib", cycle_id=FAILED, status=CycleStatus.failed,
                                    message="GitError: cannot fast-forward main"))
    store.update_cycle(FAILED, started_at="2030-01-02T09:00:00+00:00", finished_at="2030-01-02T09:00:30+00:00")
    store.set_paused(True, "holiday")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    projects = []
    for name in ("app", "lib", "empty"):
        init_repo(tmp_path / name, {"README.md": f"# {name}\n"})
        projects.append({"name": name, "path": name, "enabled": name != "empty"})
    path = tmp_path / "portfolio.json"
    path.write_text(json.dumps({"name": "home", "data_dir": "data", "projects": projects}))
    for name, fill in (("app", _fill_app), ("lib", _fill_lib)):
        store = Store.for_project(tmp_path / "data", name)
        fill(store)
        store.close()
    return path


def _cells(out: str, cell: str) -> list[str]:
    """The cells of the first table row that has a cell ``cell`` (cells are two spaces apart or more)."""
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cell in cells:
            return cells
    raise AssertionError(f"no row with {cell!r} in:\n{out}")


def test_status_table_and_json(config: Path, capsys, monkeypatch) -> None:
    code, out = orch(capsys, monkeypatch, "status", "--config", str(config))
    assert code == 0 and "Portfolio home" in out
    # The next run is shown in UTC; the last cycle is the newest, even a running one.
    assert _cells(out, "app") == ["app", "2030-01-05 12:30", "2", "0", "1", "0", "running 2030-01-03 08:00",
                                  RUNNING, "1.9500"]
    assert _cells(out, "lib") == ["lib", "paused", "0", "0", "0", "0", "failed 2030-01-02 09:00", FAILED, "0.5000"]
    assert _cells(out, "empty") == ["empty", "off", "0", "0", "0", "0", "-", "-", "0.0000"]
    assert "lib: paused: holiday" in out.splitlines()
    rows = {r["project"]: r for r in orch_json(capsys, monkeypatch, "status", "--config", str(config))}
    assert rows["app"] == {
        "project": "app", "enabled": True, "paused": False, "paused_reason": "",
        "next_run": "2030-01-05T12:30:00+00:00", "pending": 2, "in_progress": 0, "in_review": 0, "done": 1,
        "failed": 0, "last_cycle_id": RUNNING, "last_cycle_status": "running",
        "last_cycle_at": "2030-01-03T08:00:00+00:00", "found_work_at": None, "cost_usd": 1.95, "merge_waiting": "",
        "budget_stop": "", "rate_limit": "", "approval": "", "agent_cap": "", "flaky_on_main": [],
        "pull_requests": [],
    }
    assert rows["lib"]["paused"] and rows["lib"]["paused_reason"] == "holiday"
    assert rows["lib"]["last_cycle_at"] == "2030-01-02T09:00:30+00:00" and rows["lib"]["next_run"] is None
    assert not rows["empty"]["enabled"] and rows["empty"]["last_cycle_id"] is None


def test_status_without_a_prefect_server(config: Path, capsys, monkeypatch, prefect) -> None:
    monkeypatch.setattr(server, "running_server", lambda data_dir: None)
    assert all(r["next_run"] is None for r in orch_json(capsys, monkeypatch, "status", "-c", str(config)))
    assert prefect == []  # nothing asked, nothing started


def test_status_says_when_merged_work_waits_for_main(config: Path, capsys, monkeypatch) -> None:
    store = Store.for_project(config.parent / "data", "lib")
    store.add_task(Task(id="w1", title="Waits", last_failure="merge waited: your uncommitted changes touch stats.py",
                        waiting=TaskWait.merge))
    rows = {r["project"]: r for r in orch_json(capsys, monkeypatch, "status", "-c", str(config))}
    assert rows["lib"]["merge_waiting"] == "your uncommitted changes touch stats.py"
    assert rows["app"]["merge_waiting"] == ""
    code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
    assert code == 0 and "merge waiting: your uncommitted changes touch stats.py" in out


def test_status_names_the_tests_flaky_on_main(config: Path, capsys, monkeypatch) -> None:
    Store.for_project(config.parent / "data", "lib").set_flaky_on_main(["tests/test_io.py::test_read"], "b" * 40)
    rows = {r["project"]: r for r in orch_json(capsys, monkeypatch, "status", "-c", str(config))}
    assert (rows["lib"]["flaky_on_main"], rows["app"]["flaky_on_main"]) == (["tests/test_io.py::test_read"], [])
    code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
    assert code == 0 and "flaky on main:" in out and "test_read" in out


def test_tasks_json(config: Path, capsys, monkeypatch) -> None:
    tasks = orch_json(capsys, monkeypatch, "tasks", "-p", "app", "-c", str(config))
    assert {t["id"]: t["status"] for t in tasks} == {"t1": "done", "t2": "pending", "t3": "pending"}
    assert {t["id"]: t["merge_commit"] for t in tasks} == {"t1": MERGE, "t2": None, "t3": None}
    pending = orch_json(capsys, monkeypatch, "tasks", "-p", "app", "-s", "pending", "-c", str(config))
    assert [t["id"] for t in pending] == ["t2", "t3"]
    assert orch_json(capsys, monkeypatch, "tasks", "-p", "empty", "-c", str(config)) == []


def test_tasks_say_what_they_wait_for(config: Path, capsys, monkeypatch) -> None:
    assert [t["depends_on"] for t in orch_json(capsys, monkeypatch, "tasks", "-p", "app", "-c", str(config))] == [
        [], ["t2"], []]
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "app", "-c", str(config))
    assert code == 0 and _cells(out, "t3")[:7] == ["t3", "pending", "code", "3", "0/3", "Later work", "after t2"]
    assert _cells(out, "t2")[6] == "-"
    with closing(Store.for_project(config.parent / "data", "app")) as store:
        store.update_task("t2", status=TaskStatus.failed)  # as its last attempt failing would
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "app", "-c", str(config))
    assert _cells(out, "t3")[1] == "blocked" and _cells(out, "t3")[6] == "blocked by t2 (failed)"


def test_cycles_newest_first_across_projects(config: Path, capsys, monkeypatch) -> None:
    rows = orch_json(capsys, monkeypatch, "cycles", "--config", str(config))
    assert [(r["project"], r["cycle_id"]) for r in rows] == [("app", RUNNING), ("lib", FAILED), ("app", DONE)]
    done = rows[2]
    assert done == {
        "project": "app", "cycle_id": DONE, "status": "done", "started_at": "2030-01-01T10:00:00+00:00",
        "finished_at": "2030-01-01T10:03:05+00:00", "duration_s": 185.0, "planned": 2, "merged": 1,
        "rejected": 1, "cost_usd": 1.95,
    }
    assert rows[0]["finished_at"] is None and rows[0]["duration_s"] is None and rows[0]["cost_usd"] == 0.0
    limited = orch_json(capsys, monkeypatch, "cycles", "--limit", "2", "--config", str(config))
    assert [r["cycle_id"] for r in limited] == [RUNNING, FAILED]
    only_app = orch_json(capsys, monkeypatch, "cycles", "-p", "app", "--config", str(config))
    assert [r["cycle_id"] for r in only_app] == [RUNNING, DONE]
    code, out = orch(capsys, monkeypatch, "cycles", "--config", str(config))
    assert code == 0 and "Recent cycles" in out
    assert _cells(out, "lib") == [FAILED, "lib", "failed", "2030-01-02 09:00", "2030-01-02 09:00", "30s",
                                  "0", "0", "0", "0.5000"]
    assert _cells(out, DONE) == [DONE, "app", "done", "2030-01-01 10:00", "2030-01-01 10:03", "3m 05s",
                                 "2", "1", "1", "1.9500"]
    assert _cells(out, RUNNING)[3:6] == ["2030-01-03 08:00", "-", "-"]
    code, out = orch(capsys, monkeypatch, "cycles", "-p", "empty", "--config", str(config))
    assert code == 0 and "No cycles yet" in out


def test_show_tells_the_story_of_a_cycle_by_prefix(config: Path, capsys, monkeypatch) -> None:
    code, out = orch(capsys, monkeypatch, "show", "a1b", "--config", str(config))
    assert code == 0, out
    assert f"Cycle {DONE} of app: done" in out and "took 3m 05s" in out and "bbbbbbbbbbbb" in out
    assert "/app/.orch/plans/cycle_a1b2.md" in out and "Fix the [parser] (t1)" in out
    t1 = out[out.index("t1 Fix the [parser]"):out.index("t2 Test subtraction")].splitlines()
    assert [line.strip() for line in t1[1:] if line.strip()] == [
        "worker ok: did t1", "diff 1 file changed, 1 insertion(+), 1 deletion(-)",
        "verdict passed (flaky: test_io.py::test_read): looks right",
        "merged eeeeeeeeeeee (resolved a conflict), cost $0.6000"]
    t2 = out[out.index("t2 Test subtraction"):out.index("Cost")].splitlines()
    assert [line.strip() for line in t2[1:] if line.strip()] == [
        "worker ok: did t2", "verdict rejected: tests fail on the branch", "not merged, cost $0.3500"]
    assert _cells(out, "planner") == ["planner", "opus", "1", "1.0000"]
    assert _cells(out, "worker") == ["worker", "sonnet", "2", "0.7500"]
    assert "total $1.9500" in out
    story = orch_json(capsys, monkeypatch, "show", "a1b2", "--project", "app", "--config", str(config))
    assert story["cycle_id"] == DONE and story["duration_s"] == 185.0 and story["total_cost_usd"] == 1.95
    assert story["planned"] == [{"task_id": "t1", "title": "Fix the [parser]", "depends_on": []},
                                {"task_id": "t2", "title": "Test subtraction", "depends_on": []}]
    first, second = story["tasks"]
    assert first["status"] == "done" and first["merged"] and first["merge_commit"] == MERGE
    assert first["work"]["success"] and first["work"]["diff_stat"] == DIFF and first["work"]["cost_usd"] == 0.5
    assert first["verdict"] == {"passed": True, "reasons": ["looks right"], "cost_usd": 0.1,
                                "flaky_tests": ["test_io.py::test_read"]}
    assert second["status"] == "pending" and not second["merged"] and second["merge_commit"] is None
    assert second["verdict"]["reasons"] == ["tests fail on the branch"]
    assert story["costs"] == [
        {"role": "judge", "model": "haiku", "cost_usd": 0.2, "sessions": 2},
        {"role": "planner", "model": "opus", "cost_usd": 1.0, "sessions": 1},
        {"role": "worker", "model": "sonnet", "cost_usd": 0.75, "sessions": 2},
    ]


def test_show_a_failed_and_a_running_cycle(config: Path, capsys, monkeypatch) -> None:
    code, out = orch(capsys, monkeypatch, "show", "a1c", "--config", str(config))
    assert code == 0 and "GitError: cannot fast-forward main" in out and "the planner did not run" in out
    story = orch_json(capsys, monkeypatch, "show", "a1f", "--config", str(config))
    assert story["status"] == "running" and story["tasks"] == [] and story["finished_at"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "zzz"], "Error: unknown cycle id 'zzz': see `orch cycles`"),
        (["show", "a1c", "-p", "app"], "Error: unknown cycle id 'a1c' in project 'app': see `orch cycles`"),
        (["show", "a1"], "Error: cycle id 'a1' is ambiguous: it matches"),
        (["show", "a1", "-p", "app"], "Error: cycle id 'a1' is ambiguous in project 'app'"),
        (["show", " "], "Error: the cycle id must not be empty"),
        (["show", "a1b", "-p", "nope"], "Error: unknown project 'nope'"),
        (["costs", "-p", "nope"], "Error: unknown project 'nope'"),
        (["cycles", "-p", "nope"], "Error: unknown project 'nope'"),
    ],
)
def test_bad_ids_are_one_line_errors(config: Path, capsys, monkeypatch, args: list[str], message: str) -> None:
    code, out = orch(capsys, monkeypatch, *args, "--config", str(config))
    assert code == 1
    assert out.strip().startswith(message) and len(out.strip().splitlines()) == 1


def test_a_unique_prefix_in_one_project_is_found_with_the_project(config: Path, capsys, monkeypatch) -> None:
    assert orch_json(capsys, monkeypatch, "show", "a1", "-p", "lib", "-c", str(config))["cycle_id"] == FAILED


def test_costs_sum_by_every_dimension(config: Path, capsys, monkeypatch) -> None:
    report = orch_json(capsys, monkeypatch, "costs", "--config", str(config))
    groups = {dim: {g["key"]: (g["cost_usd"], g["sessions"]) for g in rows} for dim, rows in report["groups"].items()}
    assert groups == {
        "project": {"app": (1.95, 5), "lib": (0.5, 1), "empty": (0.0, 0)},
        "role": {"planner": (1.5, 2), "worker": (0.75, 2), "judge": (0.2, 2)},
        "model": {"opus": (1.5, 2), "sonnet": (0.75, 2), "haiku": (0.2, 2)},
        "day": {"2030-01-01": (1.95, 5), "2030-01-02": (0.5, 1)},
    }
    assert report["total_cost_usd"] == 2.45 and report["sessions"] == 6 and report["project"] is None
    assert [g["key"] for g in report["groups"]["role"]] == ["planner", "worker", "judge"]  # costliest first
    code, out = orch(capsys, monkeypatch, "costs", "--config", str(config))
    assert code == 0 and all(f"Cost by {d}" in out for d in ("project", "role", "model", "day"))
    assert _cells(out, "2030-01-01") == ["2030-01-01", "5", "1.9500"]
    assert _cells(out, "empty") == ["empty", "0", "0.0000"]
    assert "Total: $2.4500 over 6 agent sessions" in out


def test_costs_of_one_project_by_one_dimension(config: Path, capsys, monkeypatch) -> None:
    report = orch_json(capsys, monkeypatch, "costs", "-p", "app", "--by", "model", "-c", str(config))
    assert report == {
        "project": "app",
        "groups": {"model": [{"key": "opus", "cost_usd": 1.0, "sessions": 1},
                             {"key": "sonnet", "cost_usd": 0.75, "sessions": 2},
                             {"key": "haiku", "cost_usd": 0.2, "sessions": 2}]},
        "total_cost_usd": 1.95, "sessions": 5,
    }
    code, out = orch(capsys, monkeypatch, "costs", "-p", "empty", "--by", "role", "-c", str(config))
    assert code == 0 and "Cost of empty by role" in out and "Cost by model" not in out
    assert "Total of empty: $0.0000 over 0 agent sessions" in out
    code, out = orch(capsys, monkeypatch, "costs", "--by", "week", "-c", str(config))
    assert code == 2 and "week" in out


def test_reports_called_directly(config: Path) -> None:
    portfolio = load_portfolio(config)
    assert [r.next_run for r in status_rows(portfolio, {})] == [None, None, None]
    assert [r.cycle_id for r in cycle_rows(portfolio, limit=1)] == [RUNNING]
    assert cycle_story(portfolio, DONE).project == "app"
    with pytest.raises(StoreError, match="ambiguous"):
        cycle_story(portfolio, "a")
    only_day = cost_report(portfolio, CostDimension.day, "lib")
    assert list(only_day.groups) == ["day"] and only_day.total_cost_usd == 0.5


def test_store_queries_behind_the_reports(tmp_path: Path) -> None:
    store = Store.for_project(tmp_path, "proj")
    store.start_cycle("ab_1", "x")
    store.start_cycle("abc1", "x")
    # An id prefix is matched exactly: '_' is not a LIKE wildcard here.
    assert [c.id for c in store.find_cycles("ab_")] == ["ab_1"]
    assert [c.id for c in store.find_cycles("ab", limit=5)] == ["ab_1", "abc1"]
    assert store.find_cycles("zz") == []
    _cost(store, "s1", "ab_1", "t", "worker", "sonnet", 0.25, "2030-02-01")
    _cost(store, "s2", "ab_1", "t", "worker", "sonnet", 0.5, "2030-02-01")
    _cost(store, "s3", "abc1", None, "planner", "opus", 1.0, "2030-02-02")
    assert [row.model_dump() for row in store.cost_breakdown("ab_1")] == [
        {"role": "worker", "model": "sonnet", "day": "2030-02-01", "cost_usd": 0.75, "sessions": 2}]
    assert len(store.cost_breakdown()) == 2
    store.record_merge("ab_1", "t", "m", resolved=False)
    assert [(m.task_id, m.commit, m.resolved_conflict) for m in store.merges("ab_1")] == [("t", "m", False)]
    store.record_work(WorkResult(task_id="t", cycle_id="ab_1", attempt=1, branch="b", base_commit="x", success=True))
    store.record_work(WorkResult(task_id="t", cycle_id="abc1", attempt=2, branch="b", base_commit="x", success=False))
    assert [r.attempt for r in store.cycle_worker_results("abc1")] == [2]


def test_every_table_reads_at_80_columns(tmp_path: Path, capsys, monkeypatch) -> None:
    from orchestrator.cli import read

    init_repo(tmp_path / "inventory-service", {"README.md": "# inventory\n"})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"name": "warehouse", "data_dir": "data",
                                  "projects": [{"name": "inventory-service", "path": "inventory-service"}]}))
    store = Store.for_project(tmp_path / "data", "inventory-service")
    long_title = "Make the inventory report read the warehouse's CSV export with its forty-two columns"
    failure = "judge rejected the change: tests fail on the branch: " + "test_export.py::test_columns " * 5
    ids = [f"{n:012x}" for n in range(0xabc000000001, 0xabc000000006)]
    for n, task_id in enumerate(ids):
        store.add_task(Task(id=task_id, title=f"{long_title} ({n})", last_failure=failure if n % 2 else "",
                            depends_on=ids[:1] if n == 4 else []))
    cycle = "f00dfeedbeef"
    store.start_cycle(cycle, "b" * 40)
    store.claim_tasks(cycle, 1)
    _cost(store, "plan", cycle, None, "planner", "claude-opus-4-1-20250805", 0.009, "2030-01-01")
    store.close()

    monkeypatch.setattr(read.console, "width", 80)
    for args in (["status"], ["tasks", "-p", "inventory-service"], ["cycles"], ["costs"], ["show", "f00d"]):
        code, out = orch(capsys, monkeypatch, *args, "-c", str(config))
        assert code == 0, out
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= 80, "\n" + out
        for whole in ([*ids, "in_progress"] if args[0] == "tasks" else [cycle] if args[0] == "cycles" else []):
            assert any(whole in line for line in lines), f"{whole} not whole in:\n{out}"
    # One line per task, each with its id, status and tries together; the title cut, not folded.
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "inventory-service", "-c", str(config))
    rows = [line for line in out.splitlines() if line.startswith("abc0")]
    assert len(rows) == 5 and all(re.match(r"abc0\w{8}\s+(in_progress|pending)\s+\d/3\s+Make the", r) for r in rows)
    assert all("Make the inventory report…" in r for r in rows)
    assert "--wide shows them" in out
    code, out = orch(capsys, monkeypatch, "tasks", "-p", "inventory-service", "--wide", "-c", str(config))
    assert long_title in out and "test_export.py::test_columns" in out
    code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
    row = _cells(out, "inventory-service")
    assert row[2:6] == ["4", "1", "0", "0"] and row[6].startswith("running ") and row[-1] == "0.0090"
