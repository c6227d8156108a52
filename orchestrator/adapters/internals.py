"""The only places the orchestrator reaches inside a dependency, each with its reason.

A private name can change in any release without notice. Each one used is
wrapped here, checked for the shape we rely on, and covered by
``tests/test_internals.py``, so an upgrade that moves it fails that test (and
a user gets one clear error) instead of breaking a cycle quietly. The
layering test lets no other module import a private module or read a private
attribute of a dependency.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from orchestrator.domain.errors import OrchestratorError

if TYPE_CHECKING:
    import httpx


def click_exceptions() -> ModuleType:
    """The exceptions of the click Typer bundles (``typer._click``).

    ``orch`` runs Typer with ``standalone_mode=False`` to turn usage errors
    into one ``Error:`` line; those errors are instances of the bundled
    click's classes, which Typer exports only in part (``BadParameter``).
    """
    from typer._click import exceptions

    return exceptions


def bundled_claude_cli() -> Path | None:
    """The Claude Code CLI shipped inside claude-agent-sdk's wheel (``_bundled/claude``), if present.

    The SDK finds it itself only when it starts the CLI; ``orch-leash``
    stands between the two, so it must name the same binary.
    """
    import claude_agent_sdk

    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return path if path.is_file() else None


def prefect_http(client: Any) -> httpx.AsyncClient:
    """The httpx client inside a Prefect client (``PrefectClient._client``).

    The agent limit's slot requests go through it (Prefect's URL, auth,
    headers and CSRF token) but with httpx's own ``send``: Prefect's waits
    2 s after every 503, which a SQLite server answers to requests that
    arrive together.
    """
    import httpx

    http = getattr(client, "_client", None)
    if not isinstance(http, httpx.AsyncClient):
        raise OrchestratorError(
            f"this Prefect ({type(client).__module__}) keeps no httpx client at PrefectClient._client: "
            "install the Prefect version pyproject.toml names")
    return http


def prefect_runner_processes(runner: Any) -> Any:
    """The processes of a Prefect runner's flow runs (``Runner._process_manager``).

    ``orch start`` stops by killing them, without Prefect's own stop, which
    marks every run Cancelled (a cycle waiting for approval too). The runner
    keeps them only there; the returned manager has ``flow_run_ids()`` and an
    async ``kill(flow_run_id, force=True)``.
    """
    processes = getattr(runner, "_process_manager", None)
    kill = getattr(processes, "kill", None)
    if not (callable(getattr(processes, "flow_run_ids", None)) and callable(kill)
            and "force" in inspect.signature(kill).parameters):
        raise OrchestratorError(
            f"this Prefect ({type(runner).__module__}) keeps no process manager with flow_run_ids() and "
            "kill(force=) at Runner._process_manager: install the Prefect version pyproject.toml names")
    return processes


def prefect_runner_crash_reports(runner: Any) -> tuple[Any, Any]:
    """Where a started Prefect runner reports a run whose process died (``Runner._state_proposer``), and its client.

    It proposes Crashed whatever the run's state: a cycle that has just
    suspended for approval, whose process was still ending when ``orch start``
    stopped, would lose its suspension. ``orch start`` replaces the async
    ``propose_crashed(flow_run, message)`` of this one object, which all the
    runner's services share, and reads the run's state with the runner's own
    API client (``Runner._client``).
    """
    reports = getattr(runner, "_state_proposer", None)
    propose = getattr(reports, "propose_crashed", None)
    client = getattr(runner, "_client", None)
    if not (inspect.iscoroutinefunction(propose) and client is not None
            and list(inspect.signature(propose).parameters) == ["flow_run", "message"]):
        raise OrchestratorError(
            f"this Prefect ({type(runner).__module__}) keeps no started state proposer with "
            "propose_crashed(flow_run, message) at Runner._state_proposer, or no client at Runner._client: "
            "install the Prefect version pyproject.toml names")
    return reports, client
