"""The soak: how it judges growth, and its short version, `orch start` for three minutes under faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.soak import Sample, asked_again, growth
from orchestrator.demo.scripted import RecordedRequest, Usage


def samples(fds: list[tuple[int, int]], every_s: float = 5) -> list[Sample]:
    """One incarnation's samples: (open files, runs in flight) every ``every_s`` seconds."""
    return [Sample(at=i * every_s, incarnation=1, rss_kib=100_000, fds=n, runs=runs)
            for i, (n, runs) in enumerate(fds)]


def test_open_files_that_follow_the_runs_in_flight_are_not_growth() -> None:
    # 13 at rest, 4 more per run in flight; the late half happens to be quieter.
    load = [3, 3, 2, 3, 3, 2, 3, 3, 1, 2, 1, 3, 1, 0, 1, 1]
    grew = growth(samples([(13 + 4 * runs, runs) for runs in load]), warm_up_s=0)
    assert grew is not None and grew[1] == 0


def test_open_files_that_stay_behind_at_the_same_load_are_growth() -> None:
    # Every sample keeps one more file than the one before, whatever the load.
    load = [3, 3, 2, 3, 3, 2, 3, 3, 1, 2, 1, 3, 1, 0, 1, 1]
    grew = growth(samples([(13 + 4 * runs + i, runs) for i, runs in enumerate(load)]), warm_up_s=0)
    assert grew is not None and grew[1] > 10


def test_too_short_to_tell_is_no_figure() -> None:
    assert growth(samples([(13, 0)] * 12), warm_up_s=60) is None  # 55 s in all: all warm-up
    assert growth(samples([(25, 3)] * 6 + [(13, 0)] * 6), warm_up_s=0) is None  # no load in both halves


def asked(session: str, turn: int, started: float, final: bool = False) -> RecordedRequest:
    return RecordedRequest(role="worker", task="t", key="k", session_id=session, turn=turn, model="m",
                           started=started, finished=started + 1, status=200, usage=Usage(), tools=(),
                           prompt="", final=final)


def test_a_finished_session_asked_again_is_a_failure_unless_its_cli_was_killed_as_the_answer_came() -> None:
    # What the check reads of the scripted model: its requests.
    model = SimpleNamespace(requests=[
        asked("cut", 0, 0), asked("cut", 1, 10, final=True), asked("cut", 2, 13),
        asked("again", 0, 0), asked("again", 1, 10, final=True), asked("again", 2, 20)])
    # "cut" lost its final answer: its CLI was killed half a second after it came. "again" was
    # killed once too, long before its final answer: asking after that answer is a failure.
    kills = [("cut", 11.5), ("again", 0.5)]
    assert [(r.session_id, r.turn) for r in asked_again(model, kills, lost=True)] == [("cut", 2)]  # type: ignore[arg-type]
    assert [(r.session_id, r.turn) for r in asked_again(model, kills, lost=False)] == [("again", 2)]  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.guarantee
@pytest.mark.timeout(1200)
def test_three_minutes_under_faults_keep_every_invariant(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CLAUDE_CONFIG_DIR"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--minutes", "3", "--projects", "2", "--keep", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    report = done.stdout + "\n" + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "Invariants:" in done.stdout and "FAIL" not in done.stdout, report
    # Every kind of fault was injected while agents were at work.
    for fault in ("CLI killed mid-session (pid", "stale .git/index.lock", "Prefect server restarted",
                  "test command hangs", "orch start SIGKILLed"):
        assert fault in done.stdout, report
