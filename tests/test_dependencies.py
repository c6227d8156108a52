"""Tasks that depend on tasks: claimed only after their prerequisites merged, blocked when one fails for good."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.store import Store
from orchestrator.domain.errors import StoreError
from orchestrator.domain.models import Plan, PlannedTask, PlanOutput, Task, TaskStatus, TaskType
from orchestrator.stages.backlog_file import BacklogError, parse_backlog
from orchestrator.stages.context import ProjectContext, ProjectRef
from orchestrator.stages.planner import adopt


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.for_project(tmp_path, "proj")


def chain(store: Store, max_attempts: int = 1) -> tuple[Task, Task, Task]:
    """A → B → C, with C the most urgent: order comes from the graph, not the priority."""
    a = store.add_task(Task(id="a", title="A", priority=5, max_attempts=max_attempts))
    b = store.add_task(Task(id="b", title="B", priority=1, depends_on=["a"], max_attempts=max_attempts))
    c = store.add_task(Task(id="c", title="C", priority=1, depends_on=["b"], max_attempts=max_attempts))
    return a, b, c


def claimed(store: Store, cycle: str) -> list[str]:
    return [t.id for t in store.claim_tasks(cycle, 5)]


def test_a_dependent_is_claimed_only_after_its_prerequisite_is_done(store: Store) -> None:
    chain(store)
    assert claimed(store, "c1") == ["a"]
    assert claimed(store, "c2") == []  # A is in progress, not done
    store.update_task("a", status=TaskStatus.in_review)  # pr mode: its pull request is open
    assert claimed(store, "c3") == []
    store.complete_task("a", "m1")
    assert claimed(store, "c4") == ["b"]
    store.complete_task("b", "m2")
    assert claimed(store, "c5") == ["c"]
    assert store.blockers(store.get_task("c")) == []


def test_a_task_that_fails_for_good_blocks_its_dependents_until_it_is_retried(store: Store) -> None:
    chain(store)
    store.claim_tasks("c1", 5)
    failed = store.fail_attempt("a", "tests failed")
    assert failed.status is TaskStatus.failed
    assert {t.id: t.status for t in store.list_tasks()} == {
        "a": TaskStatus.failed, "b": TaskStatus.blocked, "c": TaskStatus.blocked}
    assert [t.id for t in store.failed_roots(store.get_task("c"))] == ["a"]
    assert claimed(store, "c2") == []
    with pytest.raises(StoreError, match="task 'c' is blocked by failed task\\(s\\) a: retry those instead"):
        store.retry_task("c")
    assert store.get_task("c").status is TaskStatus.blocked  # refused: nothing changed

    store.retry_task("a")
    assert {t.id: t.status for t in store.list_tasks()} == {
        "a": TaskStatus.pending, "b": TaskStatus.pending, "c": TaskStatus.pending}
    assert claimed(store, "c3") == ["a"]  # B and C wait for A again


def test_a_closed_pull_request_blocks_dependents_too(store: Store) -> None:
    chain(store)
    store.update_task("a", status=TaskStatus.failed, last_failure="pull request closed without merging")
    assert store.get_task("c").status is TaskStatus.blocked


def test_a_task_blocked_by_two_failures_waits_for_both_to_be_retried(store: Store) -> None:
    store.add_task(Task(id="x", title="X", max_attempts=1))
    store.add_task(Task(id="y", title="Y", max_attempts=1))
    store.add_task(Task(id="z", title="Z", depends_on=["x", "y"]))
    store.claim_tasks("c1", 2)
    store.fail_attempt("x", "no")
    store.fail_attempt("y", "no")
    assert [t.id for t in store.failed_roots(store.get_task("z"))] == ["x", "y"]
    store.retry_task("x")
    assert store.get_task("z").status is TaskStatus.blocked
    store.retry_task("y")
    assert store.get_task("z").status is TaskStatus.pending


def test_a_task_added_after_a_failed_one_starts_blocked_and_an_unknown_one_is_refused(store: Store) -> None:
    store.add_task(Task(id="a", title="A", max_attempts=1))
    store.claim_tasks("c1", 1)
    store.fail_attempt("a", "no")
    assert store.add_task(Task(id="b", title="B", depends_on=["a"])).status is TaskStatus.blocked
    with pytest.raises(StoreError, match="task 'C' depends on unknown task 'nope' in project 'proj'"):
        store.add_task(Task(id="c", title="C", depends_on=["a", "nope"]))
    assert not store.has_task("c")


def test_a_removed_prerequisite_was_done(store: Store) -> None:
    store.add_task(Task(id="a", title="A"))
    store.add_task(Task(id="b", title="B", depends_on=["a"]))
    store.claim_tasks("c1", 1)
    store.complete_task("a", "m1")
    store.db.execute("DELETE FROM tasks WHERE id = 'a'")  # as retention removes old finished tasks
    assert store.blockers(store.get_task("b")) == []
    assert claimed(store, "c2") == ["b"]


# -- the plan ------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> ProjectContext:
    init_repo(tmp_path / "app", {"README.md": "# app\n"})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "app", "max_workers": 3}]}))
    return ProjectContext.open(ProjectRef(project="app", config_path=str(config)))


def planned(title: str, *after: str, item: str | None = None) -> PlannedTask:
    return PlannedTask(title=title, description=f"Do {title}.", type=TaskType.code, backlog_item=item,
                       depends_on=list(after))


def adopt_plan(ctx: ProjectContext, *tasks: PlannedTask, max_tasks: int = 3, items: dict[str, list[str]] | None = None,
               cycle: str = "c1") -> tuple[dict[str, Task], str]:
    """Adopt a plan of ``tasks``; the stored tasks by title, and the plan document."""
    shown = sorted({t.backlog_item for t in tasks if t.backlog_item} | set(items or {}))
    plan = Plan(cycle_id=cycle, ran_planner=True, max_tasks=max_tasks, backlog_ids=shown,
                backlog_depends=items or {},
                output=PlanOutput(findings="f", proposal="p", tasks=list(tasks)))
    ctx.store.start_cycle(cycle, ctx.repo.head())
    path = adopt(ctx, plan)
    assert path is not None
    return {t.title: t for t in ctx.store.list_tasks()}, path.read_text()


def test_a_plan_names_prerequisites_by_title_or_id_and_a_chain_is_kept_whole(ctx: ProjectContext) -> None:
    ctx.store.add_task(Task(id="old", title="Older work"))
    tasks, document = adopt_plan(ctx, planned("Use the parser", "Add a parser"), planned("Add a parser", "old"),
                                 planned("Document the parser", "use THE parser"), planned("Unrelated"), max_tasks=3)
    parser, use, docs = tasks["Add a parser"], tasks["Use the parser"], tasks["Document the parser"]
    assert (parser.depends_on, use.depends_on, docs.depends_on) == (["old"], [parser.id], [use.id])
    assert "Unrelated" not in tasks  # the cap took the chain first, prerequisites before dependents
    assert "- Unrelated: over the limit of 3 task(s)" in document
    assert f"after `{parser.id}`" in document


def test_unknown_names_and_loops_are_refused_with_their_dependents(ctx: ProjectContext) -> None:
    tasks, document = adopt_plan(
        ctx, planned("Egg", "Chicken"), planned("Chicken", "Egg"), planned("Omelette", "Egg"),
        planned("Ghost work", "no-such-task"), planned("Fine"), max_tasks=5)
    assert set(tasks) == {"Fine"}
    assert "- Egg: depends on itself: 'Egg' -> 'Chicken' -> 'Egg'" in document
    assert "- Chicken: depends on itself: 'Chicken' -> 'Egg' -> 'Chicken'" in document
    assert "- Omelette: waits for 'Egg', which was refused" in document
    assert "- Ghost work: depends on 'no-such-task', which is no task of this plan or the store" in document


def test_a_task_after_a_failed_one_is_planned_blocked(ctx: ProjectContext) -> None:
    ctx.store.add_task(Task(id="gone", title="Failed work", max_attempts=1))
    ctx.store.claim_tasks("c0", 1)
    ctx.store.fail_attempt("gone", "no")
    tasks, document = adopt_plan(ctx, planned("Build on it", "gone"))
    assert tasks["Build on it"].status is TaskStatus.blocked
    assert "blocked: a task it comes after failed" in document
    assert claimed(ctx.store, "c2") == []


def test_a_backlog_items_depends_line_orders_their_tasks(ctx: ProjectContext) -> None:
    # Item B2 waits for B1: in one plan, and across plans through B1's task in the store.
    tasks, _ = adopt_plan(ctx, planned("Second", item="B2"), planned("First", item="B1"), items={"B2": ["B1"]})
    assert tasks["Second"].depends_on == [tasks["First"].id]
    tasks, _ = adopt_plan(ctx, planned("Third", item="B3"), items={"B3": ["B1"], "B1": []}, cycle="c2")
    assert tasks["Third"].depends_on == [tasks["First"].id]
    tasks, document = adopt_plan(ctx, planned("Fifth", item="B5"), items={"B5": ["B4"], "B4": []}, cycle="c3")
    assert "Fifth" not in tasks and "- Fifth: backlog item B5 waits for item B4, which has no task yet" in document


def test_backlog_files_name_what_an_item_waits_for() -> None:
    markdown = ("- [ ] Add a square root\n  Return NaN for negatives.\n  depends: add subtraction, B1234\n"
                "- [x] Add subtraction\n- [ ] Add a mean\n  Depends on: Add a square root\n")
    root, sub, mean = parse_backlog(markdown, "BACKLOG.md")
    assert root.depends_on == (sub.id, "B1234") and mean.depends_on == (root.id,) and sub.depends_on == ()
    data = ["Add subtraction", {"title": "Add a mean", "id": 7, "depends_on": "Add subtraction"},
            {"title": "Add a median", "depends_on": [7, "nope"]}]
    first, second, third = parse_backlog(json.dumps(data), "backlog.json")
    assert (second.depends_on, third.depends_on) == ((first.id,), ("7", "nope"))
    with pytest.raises(BacklogError, match=re.escape('backlog.json: item 1: "depends_on" is a JSON object, not a list')):
        parse_backlog(json.dumps([{"title": "x", "depends_on": {"a": 1}}]), "backlog.json")
