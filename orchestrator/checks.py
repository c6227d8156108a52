"""Running a project's test and lint commands, failing closed.

A command that cannot run (missing, not executable, exit 126/127) or that
runs past its timeout is a failure, never a pass. A timed-out command is
killed with its whole process group, so no stray test process lingers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from .models import CheckResult

_TAIL_CHARS = 4000
_CANNOT_RUN = {126: "not executable", 127: "command not found"}


def tail(text: str, limit: int = _TAIL_CHARS) -> str:
    """The end of a long output, where test runners put their summary."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def run_check(command: str, cwd: Path, timeout_s: float) -> CheckResult:
    """Run one configured command through bash in ``cwd``.

    The command comes from the user's own config; nothing an agent wrote is
    ever part of it.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a timeout kills it all
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        return CheckResult(
            command=command, ran=False, passed=False, exit_code=None, timed_out=True,
            duration_s=round(time.monotonic() - started, 3),
            output=tail(output + f"\n[timed out after {timeout_s:g}s and was killed]"),
        )
    code = proc.returncode
    ran = code not in _CANNOT_RUN
    if not ran:
        output += f"\n[exit {code}: {_CANNOT_RUN[code]}]"
    return CheckResult(
        command=command, ran=ran, passed=ran and code == 0, exit_code=code,
        duration_s=round(time.monotonic() - started, 3), output=tail(output),
        warnings=sum(1 for line in output.splitlines() if line.strip()),
    )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
