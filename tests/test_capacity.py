"""What the portfolio's agent cap tells ``orch status``, read from a real store."""

from __future__ import annotations

from pathlib import Path

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.store import Store
from orchestrator.domain.config import portfolio_from_dict
from orchestrator.stages.capacity import CycleSlotWatch, cap_note


def test_the_note_says_whether_the_cap_binds_now_did_or_could(tmp_path: Path) -> None:
    init_repo(tmp_path / "app", {"README.md": "# app\n"})
    project = {"name": "app", "path": "app", "max_workers": 3}
    capped = portfolio_from_dict({"max_total_workers": 2, "projects": [project]}, tmp_path / "p.json")
    uncapped = portfolio_from_dict({"projects": [project]}, tmp_path / "p.json")
    app = capped.project("app")
    store = Store.for_project(tmp_path / "data", "app")

    def note(portfolio=capped) -> str:
        return cap_note(portfolio, app, next(iter(store.list_cycles(1)), None))

    assert note() == "max_total_workers 2 allows fewer agents than max_workers 3"
    assert note(uncapped) == ""  # no cap: max_workers is all there is
    store.start_cycle("c1", "b" * 40)
    with CycleSlotWatch(store, "c1").waiting():
        assert note() == "1 session(s) waiting for an agent slot (max_total_workers 2 binds)"
    assert note().startswith("max_total_workers 2 held 1 session(s) back for ")
    assert note().endswith(" s in all in cycle c1")
    assert note(uncapped) == ""
