"""The live line ``orch run`` shows while a cycle works, read from the store.

The flow records each step as it finishes, so a second connection polling
the project's SQLite file sees the cycle advance without any help from
Prefect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from orchestrator.adapters.store import Store


def describe(store: Store, cap: int | None = None) -> str:
    """One line: the running cycle's stage, its counts, the portfolio's cap if it binds, the cost so far."""
    cycle = store.unfinished_cycle()
    if cycle is None:
        return "starting Prefect and the cycle"
    cycle_id, claimed = cycle.id, cycle.claimed  # None until the planner is done and tasks are claimed
    cost = sum(store.costs_by_role(cycle_id).values())
    head = f"cycle {cycle_id}"
    if claimed is None:
        stage = "planning"
    else:
        results = store.cycle_worker_results(cycle_id)
        built = [r for r in results if r.success]
        judged = store.verdicts(cycle_id)
        if len(results) < len(claimed):
            stage = f"working: {len(results)} of {len(claimed)} workers done"
        elif len(judged) < len(built):
            stage = f"judging: {len(judged)} of {len(built)} branches judged"
        elif any(v.passed for v in judged):
            stage = "merging the passing branches"
        else:
            stage = "finishing"
    if cycle.slot_waiting:
        stage += f"; {cycle.slot_waiting} waiting for an agent slot (max_total_workers {cap} binds)"
    return f"{head}: {stage} (${cost:.4f} so far)"


@contextmanager
def live_progress(console: Console, db_path: Path, project: str, cap: int | None = None,
                  every_s: float = 0.5) -> Iterator[None]:
    """Show :func:`describe` under a spinner until the block ends (terminals only)."""
    if not console.is_terminal:
        yield
        return
    done = threading.Event()
    with console.status(f"{project}: starting") as status:

        def watch() -> None:
            # SQLite connections belong to their thread: this one opens its own.
            store = Store(db_path, project)
            try:
                while not done.wait(every_s):
                    status.update(f"{project}: {describe(store, cap)}")
            finally:
                store.close()

        watcher = threading.Thread(target=watch, name="orch-progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()
