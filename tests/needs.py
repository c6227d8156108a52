"""Skip marks for tests that need a system package this machine may lack.

Each names the Debian package and its install command, so a skipped test says
what would make it run; ``.ci/run`` installs them all, so CI runs every test.
"""

from __future__ import annotations

import shutil
import sys

import pytest

from bench import postgres as _postgres
from scripts.headless import chromium_path

SANDBOX_INSTALL = "apt-get install bubblewrap socat"


def sandbox_available() -> bool:
    """Claude Code's Bash sandbox on Linux needs both bubblewrap and socat."""
    return not sys.platform.startswith("linux") or bool(shutil.which("bwrap") and shutil.which("socat"))


sandbox = pytest.mark.skipif(
    not sandbox_available(),
    reason=f"workers' Bash runs only in Claude Code's sandbox, which needs bubblewrap and socat: {SANDBOX_INSTALL}",
)
chromium = pytest.mark.skipif(
    chromium_path() is None, reason="needs Debian's chromium for the UI: apt-get install chromium"
)
postgres = pytest.mark.skipif(
    not _postgres.available, reason=f"needs PostgreSQL and its postgres user: {_postgres.INSTALL}"
)
