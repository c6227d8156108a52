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


@pytest.mark.timeout(700)  # one cycle, beside whatever the other test process runs
def test_the_benchmark_runs_on_any_git_repository_with_its_own_test_command(tmp_path) -> None:
    from prefect.settings import PREFECT_API_URL

    from bench.project import make_project

    repo = make_project(tmp_path, "theirs")
    before = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True).stdout
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--api-url", str(PREFECT_API_URL.value()), "--repo", str(repo),
         "--test-cmd", f"{sys.executable} -m unittest -q", "--tasks", "1"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "theirs: 1 tasks, 1 s per response" in done.stdout and "CPU " in done.stdout, done.stdout
    # The cycle merged into a clone: the repository itself is as it was.
    after = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True).stdout
    assert after == before
