"""Running ``orch`` in the test process, as its entry point runs it (less the exit watchdog, which would end the test process)."""

from __future__ import annotations

import sys

import pytest

from orchestrator.cli.main import run_command


def orch(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run ``orch ARGS`` in this process; return (exit code, output)."""
    monkeypatch.setattr(sys, "argv", ["orch", *args])
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that no table cell wraps
    code = 0
    try:
        run_command()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err
