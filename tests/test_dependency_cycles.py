"""A chain of tasks A → B → C through whole cycles: each starts from main after the one before merged."""

from __future__ import annotations

from pathlib import Path

import pytest
from cycles import git, run_cycle, sample_config, set_fields, use_model
from orch_cli import orch

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import STRINGS_PY, TEST_STRINGS_PY
from orchestrator.demo.scripted import RequestView, Scenario, ScriptedModel, edit, structured, write
from orchestrator.domain.models import TaskStatus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

SHOUT, WHISPER, MURMUR = "Add shout helper", "Add whisper helper", "Add murmur helper"
WHISPER_PY = '\n\ndef whisper(text):\n    return text.lower()\n'
MURMUR_PY = '\n\ndef murmur(text):\n    return whisper(text) + "..."\n'
PLAN = {
    "findings": "strings.py does not exist yet.", "proposal": "Three helpers, each on the one before.",
    "tasks": [
        {"title": MURMUR, "type": "code", "depends_on": [WHISPER],
         "description": "In strings.py, add murmur(text): whisper(text) followed by three dots."},
        {"title": WHISPER, "type": "code", "depends_on": [SHOUT],
         "description": "In strings.py, add whisper(text) returning text.lower()."},
        {"title": SHOUT, "type": "code",
         "description": "Create strings.py with shout(text) returning text.upper() + '!', and its test."},
        {"title": "Tidy the chicken", "type": "code", "depends_on": ["Tidy the egg"], "description": "Tidy it."},
        {"title": "Tidy the egg", "type": "code", "depends_on": ["Tidy the chicken"], "description": "Tidy it."},
    ],
}


def report(summary: str) -> list[dict]:
    return [structured({"summary": summary, "completed": True})]


def shout_first_try_breaks_add(view: RequestView) -> list[dict]:
    if "The previous attempt failed" in view.prompt:
        return [write("strings.py", STRINGS_PY), write("test_strings.py", TEST_STRINGS_PY)]
    return [edit("calc.py", "return a + b", "return a - b")]


def scenario() -> Scenario:
    # Each later helper edits the file the one before wrote: its branch must start after that merge.
    return Scenario(
        planner=[[structured(PLAN)]],
        workers={
            SHOUT: [shout_first_try_breaks_add, report("Added shout.")],
            WHISPER: [[edit("strings.py", STRINGS_PY, STRINGS_PY + WHISPER_PY)], report("Added whisper.")],
            MURMUR: [[edit("strings.py", STRINGS_PY + WHISPER_PY, STRINGS_PY + WHISPER_PY + MURMUR_PY)],
                     report("Added murmur.")],
        },
    )


def test_a_chain_waits_for_each_merge_and_a_failure_blocks_it_until_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sample_config(tmp_path, max_workers=3, max_task_attempts=1)
    project = tmp_path / "calc"
    store = Store.for_project(tmp_path / "data", "calc")
    with ScriptedModel(scenario()) as model:
        use_model(model, monkeypatch)
        first = run_cycle(config)
        tasks = {t.title: t for t in store.list_tasks()}
        shout, whisper, murmur = tasks[SHOUT], tasks[WHISPER], tasks[MURMUR]
        assert (whisper.depends_on, murmur.depends_on) == ([shout.id], [whisper.id])
        plan = Path(store.get_cycle(first.cycle_id).plan_path).read_text()
        assert "- Tidy the chicken: depends on itself: 'Tidy the chicken' -> 'Tidy the egg'" in plan
        assert "Tidy the egg" not in {t.title for t in store.list_tasks()}

        # Only the head of the chain started; it broke add and, with one attempt, failed for good.
        assert first.worked == [shout.id] and first.merged == []
        assert {t.title: t.status for t in store.list_tasks()} == {
            SHOUT: TaskStatus.failed, WHISPER: TaskStatus.blocked, MURMUR: TaskStatus.blocked}
        code, out = orch(capsys, monkeypatch, "tasks", "-p", "calc", "-c", str(config))
        assert code == 0 and out.count(f"blocked by {shout.id} (failed)") == 2
        code, out = orch(capsys, monkeypatch, "retry", "-p", "calc", whisper.id, "-c", str(config))
        assert code == 1 and "retry those instead" in out

        # Retried, the head runs again (told why it failed) and merges; the rest wait their turn.
        assert orch(capsys, monkeypatch, "retry", "-p", "calc", shout.id, "-c", str(config))[0] == 0
        assert {t.status for t in store.list_tasks()} == {TaskStatus.pending}
        set_fields(config, backlog_source="manual")  # no more planning: the chain is the work
        second = run_cycle(config)
        assert second.worked == [shout.id] and second.merged == [shout.id]
        third = run_cycle(config)
        assert third.worked == [whisper.id] and third.merged == [whisper.id]
        fourth = run_cycle(config)
        assert fourth.worked == [murmur.id] and fourth.merged == [murmur.id]

    # Each branch started from main as the merge before it left it.
    for task, after in ((whisper, shout), (murmur, whisper)):
        work = store.worker_result(task.id, 1)
        assert work is not None and work.base_commit == store.get_task(after.id).merge_commit
    assert git(project, "show", "main:strings.py") == STRINGS_PY + WHISPER_PY + MURMUR_PY
    assert {t.status for t in store.list_tasks()} == {TaskStatus.done}
