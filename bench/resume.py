"""Kill ``orch run`` after half its workers finished, run it again, count repeated requests.

Four tasks: two workers take 4 turns, two take 8, so half the workers are
done while the rest are mid-session. The run is killed with SIGKILL the
moment the second worker's result is in the store (its judge may have
started: the chains are pipelined), then ``orch run`` is run again.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from orchestrator.demo.scripted import RecordedRequest, Scenario, ScriptedModel, read

from . import project as sample
from .runs import run_orch

TASKS = 4


def _scenario(latency_s: float) -> Scenario:
    scenario = sample.scenario(TASKS, latency_s)
    for i in range(TASKS // 2, TASKS):  # the second half works twice as long
        key = f"Add step {i}\n"
        scenario.workers[key] = [[read("README.md")]] * 4 + scenario.workers[key]
    return scenario


def _padded(scenario: Scenario) -> Scenario:
    """The same answers, with the final one repeated: a session resumed after a cut-off
    turn counts one more assistant message than it got, and may skip a scripted turn."""
    for script in [*scenario.workers.values(), scenario.judge]:
        script += [script[-1]] * 2
    return scenario


def _finished_sessions(requests: Iterable[RecordedRequest], scenario: Scenario) -> set[str]:
    """Sessions whose last scripted turn (the structured output) was answered."""
    done = set()
    for r in requests:
        if r.status != 200:
            continue
        script, _ = scenario.script_for(r.role, r.prompt)
        if script and r.turn >= len(script) - 1:
            done.add(r.session_id)
    return done


@dataclass
class ResumeFigures:
    killed_after_s: float
    workers_done_at_kill: int
    first_run_requests: int
    second_run_requests: int
    uninterrupted_requests: int  # what the cycle asks for when nothing goes wrong
    repeated_for_finished_steps: int
    cut_sessions_resumed: int  # sessions begun before the kill and continued after it
    merged: int


def measure_resume(root: Path, env: dict[str, str], latency_s: float) -> ResumeFigures:
    path = sample.make_project(root)
    config = sample.write_portfolio(root, path, TASKS)
    db = root / "data" / f"{path.name}.db"
    plain, scenario = _scenario(latency_s), _padded(_scenario(latency_s))
    killed_at: list[float] = []

    def kill_when_half_done(process: subprocess.Popen[str]) -> None:
        while process.poll() is None:
            if _successful_workers(db) >= TASKS // 2:
                process.send_signal(signal.SIGKILL)
                killed_at.append(time.monotonic())
                return
            time.sleep(0.02)

    with ScriptedModel(scenario) as model:
        args = ["run", "-p", path.name, "-c", str(config)]
        first = run_orch(args, {**env, **model.env()}, root / "spans-1.jsonl", watch=kill_when_half_done)
        if not killed_at:
            raise RuntimeError(f"the first run ended before half its workers did:\n{first.output[-2000:]}")
        done_at_kill = _successful_workers(db)
        before = [r for r in model.requests if r.started <= killed_at[0]]
        second = run_orch(args, {**env, **model.env()}, root / "spans-2.jsonl")
        if second.returncode != 0:
            raise RuntimeError(f"the second orch run failed:\n{second.output[-3000:]}")
        after = [r for r in model.requests if r.started > killed_at[0]]
    finished = _finished_sessions(before, plain)
    return ResumeFigures(
        killed_after_s=killed_at[0] - first.spawned,
        workers_done_at_kill=done_at_kill,
        first_run_requests=len(before), second_run_requests=len(after),
        uninterrupted_requests=_requests_of(plain),
        repeated_for_finished_steps=sum(1 for r in after if r.session_id in finished),
        cut_sessions_resumed=len({r.session_id for r in after} & {r.session_id for r in before}),
        merged=_merged(db),
    )


def _requests_of(scenario: Scenario) -> int:
    judges = len(scenario.judge) * len(scenario.workers)
    return len(scenario.planner) + sum(len(s) for s in scenario.workers.values()) + judges


def _query(db: Path, sql: str) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:  # not made yet
        return 0


def _successful_workers(db: Path) -> int:
    return _query(db, "SELECT count(*) FROM worker_results WHERE success")


def _merged(db: Path) -> int:
    return _query(db, "SELECT count(*) FROM merges")
