"""The portfolio flow: every enabled project's cycle at once, under one agent limit."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from cycles import run_cycle, run_watched
from orch_cli import orch

from bench.project import TEST_COMMAND, make_project, scenario
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario, make_sample_project
from orchestrator.demo.scripted import ScriptedModel, most_sessions_at_once

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]


# alpha's tests of its merged result take seconds: run on the event loop, they would stall beta.
TESTS = f"{sys.executable} -m unittest -q"  # whatever `python` is on the PATH, if any
SLOW_MERGED_TESTS = f'case "$PWD" in */integration-*|*/ahead-*) sleep 4;; esac; {TESTS}'


def portfolio_file(root: Path, max_total_workers: int) -> Path:
    """Three demo projects of three tasks each; ``gamma`` is disabled."""
    projects = []
    for priority, name in enumerate(("alpha", "beta", "gamma"), start=1):
        path = make_sample_project(root / name)
        tests = SLOW_MERGED_TESTS if name == "alpha" else TESTS
        projects.append({"name": name, "path": str(path), "priority": priority, "max_workers": 3,
                         "enabled": name != "gamma", "test_command": tests,
                         "planner_context_files": ["CLAUDE.md"], "worker_timeout_seconds": 120})
    config = root / "portfolio.json"
    config.write_text(json.dumps({"name": "home", "data_dir": "data", "max_total_workers": max_total_workers,
                                  "projects": projects}))
    return config


def test_portfolio_runs_every_enabled_project_within_the_agent_limit(tmp_path: Path, monkeypatch, capsys) -> None:
    from prefect import get_client

    from flows.portfolio import portfolio

    config = portfolio_file(tmp_path, max_total_workers=2)
    # Slow answers make sessions overlap: without the limit six workers would run at once.
    with ScriptedModel(demo_scenario(latency_s=0.3)) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        # Nothing blocked the loop they share: not alpha's merged tests, nor any git call or check.
        summaries = run_watched(portfolio(config=str(config)))

    assert [s.project for s in summaries] == ["alpha", "beta"]  # highest priority first; gamma is off
    for summary in summaries:
        assert summary.status == "done" and len(summary.merged) == 2
        assert len(Store.for_project(tmp_path / "data", summary.project).list_cycles()) == 1
    assert not (tmp_path / "data" / "gamma.db").exists()
    assert most_sessions_at_once(model.requests) == 2  # the limit was reached and never passed

    async def limit() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name("orch-agents-home")).limit

    assert asyncio.run(limit()) == 2
    # The cap bound (three workers each asked for at once): the cycles say so, and so does status.
    waits = [Store.for_project(tmp_path / "data", s.project).list_cycles()[0] for s in summaries]
    assert all(c.slot_waits > 0 and c.slot_wait_s > 0 and c.slot_waiting == 0 for c in waits)
    code, out = orch(capsys, monkeypatch, "status", "--config", str(config))
    assert code == 0 and out.count("agent cap: max_total_workers 2 held") == 2, out


def test_without_a_portfolio_cap_a_project_runs_its_max_workers(tmp_path: Path, monkeypatch, capsys) -> None:
    """No max_total_workers: eight tasks and max_workers 8 are eight workers at once."""
    project = make_project(tmp_path)
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"name": "wide", "data_dir": "data", "projects": [
        {"name": project.name, "path": str(project), "max_workers": 8, "test_command": TEST_COMMAND}]}))
    with ScriptedModel(scenario(8, latency_s=1.0)) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        summary = run_cycle(config, project.name)
    assert summary.status == "done" and len(summary.merged) == 8
    workers = [r for r in model.requests if r.role == "worker"]
    assert most_sessions_at_once(workers) == 8
    code, out = orch(capsys, monkeypatch, "status", "--config", str(config))
    assert code == 0 and "agent cap" not in out
