"""Deployments built from a portfolio file, and the portfolio flow meeting a busy server."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prefect.events.schemas.automations import EventTrigger
from prefect.exceptions import PrefectHTTPStatusError

from deployments import liveness
from deployments.from_portfolio import project_deployments
from deployments.server import backend_of, public_api_url
from flows.portfolio import again_while_busy
from orchestrator.adapters.git_commands import init_repo
from orchestrator.domain.errors import OrchestratorError


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


def test_a_server_database_url_names_its_kind_or_is_refused() -> None:
    assert backend_of("postgresql+asyncpg://orch:pw@db:5432/prefect") == "PostgreSQL"
    assert backend_of("sqlite+aiosqlite:////var/prefect.db") == backend_of(None) == "SQLite"
    for bad in ("postgresql://db/prefect", "mysql://db/x", "db:5432/prefect"):
        with pytest.raises(OrchestratorError, match="--database-url: a Prefect server's database URL starts with"):
            backend_of(bad)
    assert public_api_url("127.0.0.1", 4200) == "http://127.0.0.1:4200/api"
    assert public_api_url("0.0.0.0", 4200) == f"http://{socket.getfqdn()}:4200/api"


def test_the_liveness_automation_crashes_only_our_runs_that_beat_then_fell_silent() -> None:
    rule = liveness.automation()
    trigger = rule.trigger
    assert isinstance(trigger, EventTrigger) and trigger.posture == "Proactive"
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert trigger.expect == {"prefect.flow-run.*"}  # a beat, or any state change (a suspension too)
    assert trigger.within == timedelta(seconds=liveness.SILENT_S) > timedelta(seconds=2 * liveness.HEARTBEAT_S)
    assert trigger.for_each == {"prefect.resource.id"}  # each run on its own
    assert trigger.match_related.model_dump() == {"prefect.resource.role": "flow", "prefect.resource.name": ["project-cycle", "portfolio"]}
    [action] = rule.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED" and not action.force
    assert liveness.heartbeat_env() == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(liveness.HEARTBEAT_S)}


def busy(status: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/task_runs/")
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("busy", request=request, response=httpx.Response(status, request=request)))


def test_a_cycle_the_busy_server_refused_is_asked_again_and_other_errors_are_not() -> None:
    answers: list[BaseException | str] = [busy(503), busy(503), "done"]
    calls: list[str] = []
    warned: list[str] = []

    async def cycle() -> str:
        calls.append("cycle")
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert asyncio.run(again_while_busy(cycle, "calc", warned.append, waits_s=(0, 0))) == "done"
    assert len(calls) == 3 and len(warned) == 2 and "calc" in warned[0]
    answers[:] = [busy(503), busy(503), busy(503)]  # busy past the last wait: its error stands
    with pytest.raises(PrefectHTTPStatusError):
        asyncio.run(again_while_busy(cycle, "calc", warned.append, waits_s=(0, 0)))
    answers[:] = [busy(500)]  # any other error is not the server being busy
    with pytest.raises(PrefectHTTPStatusError):
        asyncio.run(again_while_busy(cycle, "calc", warned.append, waits_s=(0, 0)))
    assert len(calls) == 7
