"""The live line of ``orch run``, read from a real store as a cycle advances."""

from __future__ import annotations

from pathlib import Path

from orchestrator.adapters.store import Store
from orchestrator.cli.progress import describe
from orchestrator.domain.models import CycleStatus, CycleSummary, Task, Verdict, WorkResult
from orchestrator.stages.capacity import CycleSlotWatch


def test_the_line_follows_the_cycle_through_its_stages(tmp_path: Path) -> None:
    store = Store.for_project(tmp_path, "app")
    assert describe(store) == "starting Prefect and the cycle"
    store.start_cycle("c1", "b" * 40)
    assert describe(store) == "cycle c1: planning ($0.0000 so far)"
    for task_id in ("t1", "t2"):
        store.add_task(Task(id=task_id, title=task_id))
    store.update_cycle("c1", claimed=["t1", "t2"])
    assert describe(store).startswith("cycle c1: working: 0 of 2 workers done")
    # Sessions held back by the portfolio's cap: the line says which cap binds.
    watch = CycleSlotWatch(store, "c1")
    with watch.waiting(), watch.waiting():
        assert describe(store, cap=1) == ("cycle c1: working: 0 of 2 workers done; 2 waiting for an agent "
                                          "slot (max_total_workers 1 binds) ($0.0000 so far)")
    assert "waiting" not in describe(store, cap=1)
    assert store.get_cycle("c1").slot_waits == 2
    for task_id in ("t1", "t2"):
        store.record_work(WorkResult(task_id=task_id, cycle_id="c1", attempt=1, branch="b", base_commit="b",
                                     success=True, cost_usd=0.25))
        store.record_cost(f"s-{task_id}", "c1", task_id, "worker", "m", 0.25)
    assert describe(store) == "cycle c1: judging: 0 of 2 branches judged ($0.5000 so far)"
    store.record_verdict(Verdict(task_id="t1", cycle_id="c1", attempt=1, commit="c", passed=True))
    store.record_verdict(Verdict(task_id="t2", cycle_id="c1", attempt=1, commit="c", passed=False))
    assert describe(store).startswith("cycle c1: merging the passing branches")
    store.finish_cycle(CycleSummary(project="app", cycle_id="c1", status=CycleStatus.done))
    assert describe(store) == "starting Prefect and the cycle"  # nothing running any more
