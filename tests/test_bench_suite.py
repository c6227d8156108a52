"""The benchmark's sample suite: it passes as generated, and it catches a broken library."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.project import PYTEST_COMMAND, make_project


def run_suite(path: Path) -> tuple[int, str]:
    done = subprocess.run(PYTEST_COMMAND.split(), cwd=path, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout


def test_the_sample_suite_passes_and_fails_when_the_library_breaks(tmp_path: Path) -> None:
    path = make_project(tmp_path, suite_tests=70)
    code, output = run_suite(path)
    assert code == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed and 70 <= int(passed[1]) <= 80, output  # and the top's own unittest test

    numbers = path / "samplelib" / "numbers.py"
    numbers.write_text(numbers.read_text().replace("sieve[0] = sieve[1] = 0", "sieve[0] = 0"))
    code, output = run_suite(path)
    assert code == 1 and "test_sieve_agrees_with_trial_division" in output, output
