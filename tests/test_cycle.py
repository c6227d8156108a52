"""Whole cycles: the real SDK and CLI against the scripted model, real git, real SQLite, Prefect."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cycles import run_cycle, set_fields, use_model

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import PLAN, demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import (
    CHECKS_TOOL,
    RequestView,
    ScriptedModel,
    edit,
    structured,
    write,
)
from orchestrator.domain.models import TaskStatus, TaskWait

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


async def artifacts_of_latest_run() -> dict[str, object]:
    """Key -> data of the artifacts of the newest flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        run = (await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1))[0]
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    return {a.key: a.data for a in artifacts if a.key}


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path]:
    project = make_sample_project(tmp_path)
    return project, write_portfolio(tmp_path, project)


def test_full_cycle_merges_good_branches_and_rejects_the_bad_one(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, config = sample
    user_file = project / "notes.txt"  # the user's own untracked work must survive
    user_file.write_text("mine\n")
    main_before = git(project, "rev-parse", "main").strip()

    with ScriptedModel(demo_scenario(latency_s=0.4)) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        gc.disable()  # a connection left open would otherwise close at some later collection
        try:
            summary = run_cycle(config)
        finally:
            gc.enable()

    assert summary.status == "done"
    # Every step closed its database connection: SQLite removes the WAL files with the last one.
    assert not list((config.parent / "data").glob("calc.db-*"))
    store = Store.for_project(config.parent / "data", "calc")
    tasks = {t.title: t for t in store.list_tasks()}
    assert set(tasks) == {"Add shout helper", "Add mean function", "Make add faster"}

    # Workers ran at overlapping times, through real tools in their worktrees.
    workers = [r for r in model.requests if r.role == "worker"]
    assert {r.key for r in workers} == set(tasks)
    assert model.max_in_flight() >= 2

    # The branch that broke the tests was rejected by the checks and not merged.
    bad = tasks["Make add faster"]
    assert bad.status is TaskStatus.pending and bad.attempts == 1
    assert "tests pass on the base but fail on the branch" in bad.last_failure
    assert "a - b" not in git(project, "show", "main:calc.py")
    # The good ones were merged into main as merge commits.
    for title in ("Add shout helper", "Add mean function"):
        assert tasks[title].status is TaskStatus.done
        assert tasks[title].merge_commit
    assert sorted(summary.merged) == sorted([tasks["Add shout helper"].id, tasks["Add mean function"].id])
    log = git(project, "log", "--merges", "--format=%s", f"{main_before}..main")
    assert log.count("Merge orch/") == 2
    # Main's tests pass afterwards, in the user's own (fast-forwarded) checkout.
    assert (project / "stats.py").exists() and (project / "strings.py").exists()
    subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, check=True, capture_output=True)
    assert user_file.read_text() == "mine\n"
    assert git(project, "status", "--porcelain").strip() == "?? notes.txt"

    # The audit trail and the database say what happened.
    orch = project / ".orch"
    assert (orch / "plans" / f"cycle_{summary.cycle_id}.md").read_text().startswith("# Plan for cycle")
    for task in tasks.values():
        assert (orch / "workers" / f"{task.id}.md").exists()
        assert (orch / "verdicts" / f"{task.id}.md").exists()
    assert "FAIL" in (orch / "verdicts" / f"{bad.id}.md").read_text()
    assert len(list(store.db["worker_results"].rows)) == 3
    assert len(list(store.db["judge_verdicts"].rows)) == 3
    assert store.get_cycle(summary.cycle_id).status == "done"

    # Costs equal what the scripted usage implies, per role and in total.
    for role in ("planner", "worker", "judge"):
        assert summary.cost_by_role[role] == pytest.approx(model.cost_usd(role), abs=1e-9)
    assert store.total_cost() == pytest.approx(model.cost_usd(), abs=1e-9)
    # No review of the branch that failed the checks was answered (with fast tests, none was asked).
    assert {r.task for r in model.requests if r.role == "judge" and r.final} == {
        tasks["Add shout helper"].id, tasks["Add mean function"].id
    }

    # Nothing is left behind: no worktrees, no orchestrator branches; .orch stays untracked.
    assert git(project, "worktree", "list").count("\n") == 1
    assert git(project, "branch", "--list", "orch/*").strip() == ""
    assert ".orch/" in (project / ".git" / "info" / "exclude").read_text()

    # The plan, the verdicts, the summary and the progress are artifacts of the flow run in the UI.
    artifacts = asyncio.run(artifacts_of_latest_run())
    assert set(artifacts) == {"plan-calc", "verdicts-calc", "summary-calc", "progress-calc"}
    assert artifacts["progress-calc"] == 100.0
    assert "Make add faster" in str(artifacts["verdicts-calc"])


def test_second_cycle_retries_the_rejected_task_with_the_reasons(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = sample
    runs = config.parent / "test-runs"  # where each test run is made: a line per run
    set_fields(config, test_command=f"echo $(basename $PWD) >> {runs}; {sys.executable} -m unittest -q")
    with ScriptedModel(demo_scenario()) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        first = run_cycle(config)
        before = len(runs.read_text().splitlines())
        second = run_cycle(config)
    # The second cycle's base is main as the first merged and tested it: its tests do not run again.
    made = runs.read_text().splitlines()
    assert f"base-{first.cycle_id}" in made[:before]
    assert not any(m.startswith("base-") for m in made[before:]), made

    store = Store.for_project(config.parent / "data", "calc")
    bad = next(t for t in store.list_tasks() if t.title == "Make add faster")
    # Two pending slots were free, so the planner ran again; the rejected task was retried.
    assert second.cycle_id != first.cycle_id
    assert bad.id in second.worked and bad.attempts == 2
    attempts = [r for r in model.requests if r.role == "worker" and r.task == bad.id and r.turn == 0]
    assert len(attempts) == 2
    # The retry was told why the first attempt failed, test output included.
    assert "The previous attempt failed" not in attempts[0].prompt
    assert "tests pass on the base but fail on the branch" in attempts[1].prompt
    assert "AssertionError: -1 != 5" in attempts[1].prompt
    cycles = store.list_cycles()
    assert [c.status for c in cycles] == ["done", "done"]
    assert cycles[0].claimed  # the second cycle recorded what it worked on


def test_a_batch_cycle_tests_only_merged_results_and_sends_back_the_branch_that_breaks_them(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, config = sample
    runs = config.parent / "test-runs"  # where each test run is made: a line per run
    set_fields(config, test_strategy="batch",
               test_command=f"echo $(basename $PWD) >> {runs}; {sys.executable} -m unittest -q")
    scenario = demo_scenario()
    careless, report = scenario.workers["Make add faster"][1], scenario.workers["Make add faster"][2]

    def told_why(view: RequestView) -> list[dict[str, Any]]:  # the retry, told why, keeps add right
        if "The previous attempt failed" in view.prompt:
            return [edit("calc.py", "return a + b", "return b + a  # same result")]
        return careless  # type: ignore[return-value]

    scenario.workers["Make add faster"] = [scenario.workers["Make add faster"][0], told_why, report]
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)
        store = Store.for_project(config.parent / "data", "calc")
        tasks = {t.title: t for t in store.list_tasks()}  # as the first cycle left them
        first_runs = len(runs.read_text().splitlines())
        main_after_first = git(project, "show", "main:calc.py")
        second = run_cycle(config)

    bad = tasks["Make add faster"]
    # No branch was tested alone, nor the base: only merged results (and main, to tell its own failures).
    made = runs.read_text().splitlines()[:first_runs]
    assert all(m.startswith(("ahead-", "integration-", "main-")) for m in made), made
    # The batch fails (ahead of the merge, while the reviewers read, and at the merge: a first failure
    # is not kept), main's failures are read, the search finds the culprit, the rest is checked once.
    assert len(made) <= 7, made
    # The branch that breaks the tests was found and sent back with its own failing output.
    assert bad.status is TaskStatus.pending and bad.attempts == 1
    assert "tests fail once merged" in bad.last_failure and "AssertionError: -1 != 5" in bad.last_failure
    assert sorted(summary.merged) == sorted([tasks["Add shout helper"].id, tasks["Add mean function"].id])
    assert "a - b" not in main_after_first
    subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, check=True, capture_output=True)
    # The reviewer saw every branch, told that the tests run on the merged branches.
    reviews = [r for r in model.requests if r.role == "judge" and r.turn == 0]
    assert {r.task for r in reviews} == {t.id for t in tasks.values()}
    assert all("Not run on this branch alone" in r.prompt for r in reviews)
    # The retry passes as a batch of its own: one suite run, the batch's (ahead of the merge, or at
    # it); main's tree was tested as the first cycle's merged result, so nothing runs on main.
    assert second.merged == [bad.id]
    [batch] = runs.read_text().splitlines()[first_runs:]
    assert batch in (f"ahead-{second.cycle_id}", f"integration-{second.cycle_id}")
    assert "b + a" in git(project, "show", "main:calc.py")


def test_reviewers_work_while_the_tests_run_and_one_whose_tests_fail_is_stopped_its_cost_kept(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = sample
    # Tests slow enough that every reviewer is asked before they end.
    set_fields(config, review_while_testing=True, test_command=f"sleep 4; {sys.executable} -m unittest -q")
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    store = Store.for_project(config.parent / "data", "calc")
    tasks = {t.title: t for t in store.list_tasks()}
    good, bad = [tasks["Add shout helper"].id, tasks["Add mean function"].id], tasks["Make add faster"]
    assert sorted(summary.merged) == sorted(good)
    assert "tests pass on the base but fail on the branch" in bad.last_failure
    reviews = [r for r in model.requests if r.role == "judge"]
    assert all(CHECKS_TOOL in r.tools and "Running on this branch while you review" in r.prompt for r in reviews)
    # The good branches' reviewers waited for the tests and answered once they were in.
    for task_id in good:
        assert sorted(r.turn for r in reviews if r.task == task_id) == [0, 1]
    # The bad branch's reviewer was asked, then stopped when its tests failed, never to answer...
    assert [r.turn for r in reviews if r.task == bad.id] == [0]
    verdict = store.verdict(bad.id, 1)
    assert verdict is not None and not verdict.passed and verdict.review is None
    # ...and what it had cost is recorded (every response costs the same), as is every role's.
    assert verdict.cost_usd == pytest.approx(model.cost_usd("judge") / len(reviews), abs=1e-9)
    for role in ("planner", "worker", "judge"):
        assert summary.cost_by_role[role] == pytest.approx(model.cost_usd(role), abs=1e-9)


KNOWN_BUG = "import unittest\n\n\nclass Known(unittest.TestCase):\n    def test_known(self):\n        self.fail('a bug main has')\n"
PIN_VERSION = "import unittest\n\nimport calc\n\n\nclass V(unittest.TestCase):\n    def test_version(self):\n        self.assertEqual(calc.VERSION, 1)\n"


def test_a_batch_on_a_red_base_sends_back_both_branches_that_break_it_and_merges_the_rest(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, config = sample
    (project / "test_known.py").write_text(KNOWN_BUG)  # main fails a test of its own
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "A known failing test")
    runs = config.parent / "test-runs"
    set_fields(config, test_strategy="batch", max_workers=4,
               test_command=f"echo $(basename $PWD) >> {runs}; {sys.executable} -m unittest -q")
    scenario = demo_scenario()
    version = {"title": "Check the version", "type": "code", "priority": 3,
               "description": "Add test_version.py checking calc.VERSION."}
    scenario.planner[-1] = [structured({**PLAN, "tasks": [*PLAN["tasks"], version]})]
    scenario.workers["Check the version"] = [[write("test_version.py", PIN_VERSION)],
                                             [structured({"summary": "Pinned it.", "completed": True})]]
    with ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)

    tasks = {t.title: t for t in Store.for_project(config.parent / "data", "calc").list_tasks()}
    # Each culprit goes back with its own failing tests, named before the output's end.
    faster, pinned = tasks["Make add faster"], tasks["Check the version"]
    assert faster.status is TaskStatus.pending and "test_add" in faster.last_failure.split("\n")[0]
    assert pinned.status is TaskStatus.pending and "test_version" in pinned.last_failure.split("\n")[0]
    assert "test_known" not in faster.last_failure.split("\n")[0] + pinned.last_failure.split("\n")[0]
    # Main's own failure blocked nothing: the other two merged, and main fails only what it failed.
    assert sorted(summary.merged) == sorted([tasks["Add shout helper"].id, tasks["Add mean function"].id])
    tested = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, capture_output=True, text=True)
    assert "test_known" in tested.stderr and "FAILED (failures=1)" in tested.stderr
    # No branch alone: the batch (1), main's own failures, confirmed (2), and two searches over four
    # merges with the rest merged again between them (5 at most).
    made = runs.read_text().splitlines()
    assert all(m.startswith(("ahead-", "integration-", "main-")) for m in made) and len(made) <= 9, made


@pytest.mark.guarantee
def test_a_merge_that_waits_for_the_user_completes_later_without_paying_again(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, config = sample
    # The user is writing their own stats.py: main must not move over it.
    (project / "stats.py").write_text("# the user's draft, not committed\n")
    main_before = git(project, "rev-parse", "HEAD").strip()
    with ScriptedModel(demo_scenario()) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        first = run_cycle(config)
        store = Store.for_project(config.parent / "data", "calc")
        waiting = {t.title: t for t in store.list_tasks(TaskStatus.pending) if t.last_failure.startswith("merge waited")}
        assert set(waiting) == {"Add shout helper", "Add mean function"}
        assert all(t.waiting is TaskWait.merge for t in waiting.values())
        assert first.merged == [] and git(project, "rev-parse", "HEAD").strip() == main_before
        assert (project / "stats.py").read_text() == "# the user's draft, not committed\n"
        from orchestrator.adapters.portfolio_file import load_portfolio
        from orchestrator.cli.reports import status_rows
        assert "stats.py" in status_rows(load_portfolio(config), {})[0].merge_waiting

        (project / "stats.py").unlink()  # the user is done with it
        seen = len(model.requests)
        second = run_cycle(config)
        again = model.requests[seen:]
    assert set(second.merged) == {t.id for t in waiting.values()}
    # Neither the work nor the review of the waiting branches was paid for again.
    assert not {r.task for r in again if r.role in ("worker", "judge")} & {t.id for t in waiting.values()}
    assert all(store.get_task(t.id).status is TaskStatus.done for t in waiting.values())
    assert git(project, "worktree", "list").count("\n") == 1
    green = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, capture_output=True, text=True)
    assert green.returncode == 0 and (project / "stats.py").exists()


@pytest.mark.guarantee
def test_a_flaky_test_rejects_no_branch_blames_no_merge_and_is_reported(
    sample: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from orchestrator.adapters.portfolio_file import load_portfolio
    from orchestrator.cli.reports import cycle_story, status_rows

    project, config = sample
    ran = tmp_path / "ran"
    ran.mkdir()
    # In each checkout (the base's, each branch's, the merged result's) the first test run
    # fails one test; every run after it runs the real tests.
    flake = "test_io (test_calc.T.test_io)"
    set_fields(config, test_command=(
        f'm={ran}/$(pwd | cksum | cut -d" " -f1); if [ -e "$m" ]; then {sys.executable} -m unittest -q; '
        f'else touch "$m"; echo "FAIL: {flake}"; exit 1; fi'))
    with ScriptedModel(demo_scenario()) as model:
        use_model(model, monkeypatch)
        summary = run_cycle(config)
    store = Store.for_project(config.parent / "data", "calc")
    verdicts = {store.get_task(v.task_id).title: v for v in store.verdicts(summary.cycle_id)}
    bad = verdicts.pop("Make add faster")
    assert not bad.passed and "AssertionError" in bad.tests.output  # a real failure still rejects
    assert all(v.passed and v.tests.flaky_tests == [flake] for v in verdicts.values())
    assert len(summary.merged) == 2  # the merged result's flake blamed no branch
    assert len(list(ran.iterdir())) == 5  # the base, three branches, the merged result: one flake each
    portfolio = load_portfolio(config)
    assert status_rows(portfolio, {})[0].flaky_on_main == [flake]
    told = [t.verdict for t in cycle_story(portfolio, summary.cycle_id, "calc").tasks if t.verdict and t.verdict.passed]
    assert [v.flaky_tests for v in told] == [[flake], [flake]]
    green = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=project, capture_output=True, text=True)
    assert green.returncode == 0
