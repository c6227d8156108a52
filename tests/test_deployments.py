"""Deployments built from a portfolio file."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from deployments.from_portfolio import project_deployments
from orchestrator.adapters.git_commands import init_repo


def test_one_deployment_per_enabled_project_with_its_interval(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        init_repo(tmp_path / name, {"README.md": name})
    config = tmp_path / "portfolio.json"
    config.write_text(json.dumps({"projects": [
        {"name": "a", "path": "a", "priority": 2, "cycle_interval_minutes": 15},
        {"name": "b", "path": "b", "priority": 1},
        {"name": "c", "path": "c", "enabled": False},
    ]}))
    deployments = project_deployments(config)
    assert [d.name for d in deployments] == ["b", "a"]
    assert [d.schedules[0].schedule.interval for d in deployments] == [timedelta(minutes=30), timedelta(minutes=15)]
    assert deployments[1].parameters == {"project": "a", "config": str(config.resolve())}
    assert deployments[1].flow_name == "project-cycle"
