"""``orch status`` and ``orch tasks`` against a store of many tasks.

The rows are written by SQL in one statement each (Python objects for
100,000 tasks would take longer than the commands being measured): 90 %
done, 6 % failed, 4 % pending, with a cycle per three tasks and a cost row
per task, as a long-lived project accumulates them.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.store import Store

from .runs import run_orch


def fill(store: Store, tasks: int) -> None:
    """Add ``tasks`` task rows, a third as many cycles and one cost row per task."""
    seq = "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?) "
    when = "strftime('%Y-%m-%dT%H:%M:%S', 'now', '-' || (? - i) || ' minutes') || '+00:00'"
    with store.db.conn:
        store.db.execute(
            seq + "INSERT INTO tasks (id, title, description, type, priority, status, attempts, max_attempts,"
            " source, cycle_id, claimed_by, branch, last_failure, merge_commit, fingerprint, created_at, updated_at)"
            " SELECT printf('t%011d', i), 'Task number ' || i, 'Do one small thing, number ' || i || ', and test it.',"
            " 'code', 1 + i % 5,"
            " CASE WHEN i % 100 < 90 THEN 'done' WHEN i % 100 < 96 THEN 'failed' ELSE 'pending' END,"
            " 1, 3, 'planner', printf('c%011d', i / 3), NULL, NULL,"
            " CASE WHEN i % 100 BETWEEN 90 AND 95 THEN 'judge rejected the change: tests fail' ELSE '' END,"
            " NULL, hex(randomblob(8)), " + when + ", " + when + " FROM seq",
            [tasks, tasks, tasks],
        )
        store.db.execute(
            seq + "INSERT INTO cycles (id, status, base_commit, started_at, finished_at, plan_path,"
            " planned, claimed, cost_usd, session_id, summary, message, flow_run_id)"
            " SELECT printf('c%011d', i), 'done', 'abc', " + when + ", " + when + ", '', '[]', '[]', 0.05,"
            " '', '{}', '', '' FROM seq",
            [tasks // 3, tasks // 3, tasks // 3],
        )
        store.db.execute(
            seq + "INSERT INTO agent_costs (session_id, cycle_id, task_id, role, model, cost_usd, created_at)"
            " SELECT printf('s%011d', i), printf('c%011d', i / 3), printf('t%011d', i), 'worker', 'sonnet', 0.01,"
            " " + when + " FROM seq",
            [tasks, tasks],
        )


@dataclass
class ReadFigures:
    tasks: int
    seconds: dict[str, float]  # command -> median wall time
    servers_started: int


def measure_reads(root: Path, env: dict[str, str], tasks: int, repeats: int = 5) -> ReadFigures:
    """Median wall time of ``orch status`` and ``orch tasks`` over ``repeats`` runs each."""
    project = root / "big"
    init_repo(project, {"README.md": "# big\n"})
    config = root / "orch.json"
    config.write_text(json.dumps({"name": "reads", "data_dir": str(root / "data"),
                                  "projects": [{"name": "big", "path": str(project)}]}))
    store = Store.for_project(root / "data", "big")
    fill(store, tasks)
    store.close()
    commands = {"orch status": ["status", "-c", str(config)],
                "orch tasks": ["tasks", "-p", "big", "-c", str(config)]}
    seconds, servers = {}, 0
    for name, args in commands.items():
        times = []
        for _ in range(repeats):
            started = time.monotonic()
            run = run_orch(args, env, root / "spans.jsonl")
            times.append(time.monotonic() - started)
            if run.returncode != 0:
                raise RuntimeError(f"{name} failed (exit {run.returncode}): {run.output[-2000:]}")
            servers += run.servers_started
        seconds[name] = statistics.median(times)
    return ReadFigures(tasks, seconds, servers)
