"""The soak's short version: `orch start` for three minutes under faults, every invariant holding.

It serves toolz from the real-project snapshots too when this machine has
them (see bench/realrepos.py), else generated projects only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.guarantee]


@pytest.mark.timeout(1200)
def test_three_minutes_under_faults_keep_every_invariant(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CLAUDE_CONFIG_DIR"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--minutes", "3", "--projects", "2", "--keep", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    report = done.stdout + "\n" + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "Invariants:" in done.stdout and "FAIL" not in done.stdout, report
    # Every kind of fault was injected while agents were at work.
    for fault in ("CLI killed mid-session (pid", "stale .git/index.lock", "Prefect server restarted",
                  "test command hangs", "orch start SIGKILLed"):
        assert fault in done.stdout, report
