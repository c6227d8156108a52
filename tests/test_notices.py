"""Webhook notices from real cycles, to a receiver on loopback (a failing receiver: test_approval.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cycles import run_cycle, sample_config, use_model
from webhook_receiver import WebhookReceiver

from orchestrator.demo.sample import PLAN, demo_scenario
from orchestrator.demo.scripted import ScriptedModel, structured
from orchestrator.domain.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]


def test_a_failed_cycle_and_a_paused_project_are_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = demo_scenario()
    only_the_bad_task = {**PLAN, "tasks": [t for t in PLAN["tasks"] if t["title"] == "Make add faster"]}
    scenario.planner = [[structured(only_the_bad_task)]]
    with WebhookReceiver() as hook, ScriptedModel(scenario) as model:
        use_model(model, monkeypatch)
        # Its one task failing for good pauses the project.
        paused = sample_config(tmp_path / "paused", webhook_url=hook.url, max_task_attempts=1,
                               max_consecutive_failures=1)
        run_cycle(paused)
        notice = hook.wait_for(lambda b: b["event"] == "project_paused")
        assert "1 tasks failed in a row" in notice["text"] and notice["project"] == "calc"
        finished = hook.wait_for(lambda b: b["event"] == "cycle_finished")
        assert finished["details"] | {"cost": ""} == {"status": "done", "merged": "0", "not merged": "1", "cost": ""}

        # A backlog file that is not committed fails the cycle.
        broken = sample_config(tmp_path / "broken", webhook_url=hook.url, backlog_source="backlog_file",
                               backlog_file="BACKLOG.md")
        with pytest.raises(ConfigError):
            run_cycle(broken)
        failed = hook.wait_for(lambda b: b["event"] == "cycle_failed")
    assert "backlog_file 'BACKLOG.md' is not committed" in failed["details"]["note"]
