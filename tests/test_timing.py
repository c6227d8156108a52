"""Timing spans and the benchmark's attribution of wall time (no cycle is run here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from bench.timeline import attribute, union_length
from orchestrator.adapters.checks import run_check
from orchestrator.adapters.timing import ENV, read_spans, span


def test_spans_are_written_only_when_asked_for_and_name_their_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with span("step", "plan"):
        pass
    path = tmp_path / "spans.jsonl"
    assert not path.exists()
    monkeypatch.setenv(ENV, str(path))

    async def two_steps() -> None:
        async def step(name: str) -> None:
            with span("step", name):
                await asyncio.sleep(0.01)
                await anyio.to_thread.run_sync(run_check, "true", tmp_path, 10)  # in a thread, as the judge runs it

        await asyncio.gather(step("work"), step("judge"))

    asyncio.run(two_steps())
    spans = read_spans(path)
    checks = sorted(s["step"] for s in spans if s["kind"] == "check")
    assert checks == ["judge", "work"]  # each test run knows its step though the steps overlap
    assert all(s["end"] >= s["start"] for s in spans)


def test_every_moment_goes_to_the_first_busy_layer_and_the_parts_add_up() -> None:
    shares = attribute(0.0, 10.0, [
        ("model", [(1.0, 3.0), (2.0, 4.0)]),
        ("tests", [(3.5, 5.0)]),
        ("git", [(4.5, 6.0), (20.0, 30.0)]),  # the part outside the run does not count
    ])
    assert shares == pytest.approx({"model": 3.0, "tests": 1.0, "git": 1.0, "rest": 5.0})
    assert sum(shares.values()) == pytest.approx(10.0)
    assert union_length([(0, 2), (1, 3), (5, 6)]) == pytest.approx(4.0)
