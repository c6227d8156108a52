"""The benchmark keeps working: its quick variant runs every scenario (figures are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_quick_benchmark_runs_every_scenario(tmp_path) -> None:
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--api-url", str(PREFECT_API_URL.value()), "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for section in ("Cycles", "Resume", "Read commands", "Targets"):
        assert section in done.stdout
    assert "Traceback" not in done.stderr
    assert out.exists()

