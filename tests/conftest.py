"""Shared fixtures: real git repositories, real SQLite, Prefect under one harness."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry, a private home.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="orch-prefect-home-"))
# A private HOME: the CLI's Bash tool starts a login shell, and the user's profile
# (pyenv, nvm or conda set-up, or a lock a killed shell left behind) must not slow the tests.
os.environ["HOME"] = tempfile.mkdtemp(prefix="orch-test-home-")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
# The CLI's consoles read their width once, when first imported: wide enough that no table
# cell wraps, whichever test imports them first (and in every worker of a parallel run).
os.environ["COLUMNS"] = "250"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def agent_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep agent sessions of a test in its own folder."""
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("ORCH_CONFIG", raising=False)


# The longest files first (measured, in seconds of one test process): two processes share
# the files, and a long one started near the end would run on alone and set the tier's end.
LONGEST_FIRST = ("test_soak.py", "test_two_hosts.py", "test_serving.py", "test_resume.py", "test_agent_limit.py",
                 "test_pulls.py", "test_approval_serving.py", "test_cli.py", "test_agent.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
