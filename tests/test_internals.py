"""The private parts of dependencies the orchestrator relies on still have the shape it needs.

Each is wrapped in ``orchestrator.adapters.internals``; an upgrade that moves
one fails here, by name, instead of in a cycle.
"""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest
import typer
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from orchestrator.adapters import internals
from orchestrator.domain.errors import OrchestratorError


def test_typers_bundled_click_has_the_errors_orch_turns_into_one_line() -> None:
    errors = internals.click_exceptions()
    assert issubclass(errors.NoArgsIsHelpError, errors.UsageError)
    assert issubclass(errors.UsageError, errors.ClickException)
    assert issubclass(typer.BadParameter, errors.UsageError)  # the classes Typer raises are these


def test_the_sdk_still_bundles_a_claude_code_cli_that_runs() -> None:
    cli = internals.bundled_claude_cli()
    assert cli is not None and os.access(cli, os.X_OK)
    done = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Claude Code" in done.stdout


def test_prefects_client_keeps_an_httpx_client_pointed_at_the_api() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        http = internals.prefect_http(get_client())
    assert isinstance(http, httpx.AsyncClient) and str(http.base_url).startswith("http://127.0.0.1:9/api")


def test_a_prefect_without_it_is_one_clear_error() -> None:
    with pytest.raises(OrchestratorError, match=r"PrefectClient\._client"):
        internals.prefect_http(object())


def test_prefects_runner_keeps_its_flow_runs_processes_where_orch_start_stops_them() -> None:
    from prefect.runner import Runner

    processes = internals.prefect_runner_processes(Runner())
    assert not processes.flow_run_ids()  # none started yet


def test_a_prefect_runner_without_them_is_one_clear_error() -> None:
    with pytest.raises(OrchestratorError, match=r"Runner\._process_manager"):
        internals.prefect_runner_processes(object())


def test_a_prefect_runner_without_its_crash_reports_is_one_clear_error() -> None:
    # The shape itself is proved on a started runner, against a server, in test_serving.
    with pytest.raises(OrchestratorError, match=r"Runner\._state_proposer"):
        internals.prefect_runner_crash_reports(object())
