"""Running whole cycles in the test process: a sample project, its portfolio, the flow."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.demo import make_sample_project, write_portfolio
from orchestrator.models import CycleSummary
from orchestrator.scripted import ScriptedModel


def sample_config(root: Path, **fields: Any) -> Path:
    """The demo's project ``calc`` under ``root``, its portfolio file with ``fields`` set on the project."""
    config = write_portfolio(root, make_sample_project(root))
    data = json.loads(config.read_text())
    portfolio_fields = {k: fields.pop(k) for k in ("webhook_url", "max_total_workers") if k in fields}
    data.update(portfolio_fields)
    data["projects"][0].update(fields)
    config.write_text(json.dumps(data, indent=2))
    return config


def set_fields(config: Path, **fields: Any) -> None:
    """Change fields of the (first) project in a portfolio file."""
    data = json.loads(config.read_text())
    data["projects"][0].update(fields)
    config.write_text(json.dumps(data, indent=2))


def use_model(model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in model.env().items():
        monkeypatch.setenv(key, value)


def run_cycle(config: Path, project: str = "calc", **params: Any) -> CycleSummary:
    """One ``project-cycle`` flow run, as ``orch run`` starts it (without a deployment)."""
    from flows.project_cycle import project_cycle

    return asyncio.run(project_cycle(project=project, config=str(config), **params))


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def bare_origin(project: Path) -> Path:
    """A bare repository beside ``project``, made its ``origin`` with main pushed."""
    remote = project.parent / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "-q", "origin", "main")
    return remote
