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


# Two tests that start many processes of their own and watch the clock are kept apart: on 2 cores,
# the one that meets the other's load times out. The two-host test goes first, the soak last.
FIRST, LAST = ("test_two_hosts.py",), ("test_soak.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return 0 if item.path.name in FIRST else 2 if item.path.name in LAST else 1

    items.sort(key=rank)  # stable: the rest keep their order
