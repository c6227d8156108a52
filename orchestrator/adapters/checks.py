"""Running a project's test and lint commands, failing closed.

A command that cannot run (missing, not executable, exit 126/127) or that
runs past its timeout is a failure, never a pass. A timed-out command is
killed with its whole process group, so no stray test process lingers. A
failing test run is run again before its failures count (:func:`confirmed`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.adapters.secrets import redact
from orchestrator.adapters.timing import mark
from orchestrator.domain.models import CheckResult

_TAIL_CHARS = 4000
_CANNOT_RUN = {126: "not executable", 127: "command not found"}

# How the common runners name a failing test: pytest's summary lines,
# unittest's headers, go test's and cargo test's markers.
_FAILED_TEST = [
    re.compile(r"^(?:FAILED|ERROR) (\S+::\S+)", re.MULTILINE),
    re.compile(r"^(?:FAIL|ERROR): (\S+ \([\w.]+\))", re.MULTILINE),
    re.compile(r"^\s*--- FAIL: (\S+)", re.MULTILINE),
    re.compile(r"^test (\S+) \.\.\. FAILED$", re.MULTILINE),
]


def failed_tests(output: str) -> list[str] | None:
    """The failing test ids named in a test run's output, or None if it names none."""
    found = {m.group(1) for pattern in _FAILED_TEST for m in pattern.finditer(output)}
    return sorted(found) or None


def tail(text: str, limit: int = _TAIL_CHARS) -> str:
    """The end of a long output, where test runners put their summary."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


BACKGROUND_NICE = 10
"""The niceness of a check nothing waits on yet: it takes the CPU the agents leave idle."""


STOP_POLL_S = 0.5
"""How often a check that may be stopped looks at its ``stop`` event."""


def run_check(command: str, cwd: Path, timeout_s: float, background: bool = False,
              stop: threading.Event | None = None) -> CheckResult:
    """Run one configured command through bash in ``cwd``; ``background`` runs it niced.

    Once ``stop`` is set, the command is killed and the result says it did not
    run. The command comes from the user's own config; nothing an agent wrote
    is ever part of it.
    """
    started = time.monotonic()
    niced = ["nice", "-n", str(BACKGROUND_NICE)] if background else []
    proc = subprocess.Popen(
        [*niced, "bash", "-c", command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a timeout kills it all
    )
    if background:
        _lower_session_priority(proc.pid)
    try:
        output = _output(proc, timeout_s, stop)
    except _Stopped:
        _kill_group(proc)
        proc.communicate()
        mark("check", command, started, time.monotonic())
        return CheckResult(command=command, ran=False, passed=False, exit_code=None,
                           duration_s=round(time.monotonic() - started, 3), output="[stopped: no longer needed]")
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        output, _ = proc.communicate()
        mark("check", command, started, time.monotonic())
        output = redact(output)
        return CheckResult(
            command=command, ran=False, passed=False, exit_code=None, timed_out=True,
            duration_s=round(time.monotonic() - started, 3),
            output=tail(output + f"\n[timed out after {timeout_s:g}s and was killed]"),
        )
    mark("check", command, started, time.monotonic())
    output = redact(output)  # it goes to the reviewer, the store and the UI
    code = proc.returncode
    ran = code not in _CANNOT_RUN
    if not ran:
        output += f"\n[exit {code}: {_CANNOT_RUN[code]}]"
    return CheckResult(
        command=command, ran=ran, passed=ran and code == 0, exit_code=code,
        duration_s=round(time.monotonic() - started, 3), output=tail(output),
        warnings=sum(1 for line in output.splitlines() if line.strip()),
        # Read from the whole output: the stored tail may have lost the first failures.
        failed_tests=None if code == 0 else failed_tests(output),
    )


def confirmed(first: CheckResult, again: Callable[[], CheckResult], retries: int) -> CheckResult:
    """A failing test run, run ``again`` up to ``retries`` times before its failures count.

    A run that passes ends it: the result passes, and the tests the runs
    before failed are flaky. When every run fails, a test counts as failing
    only if it failed in every run; the others are flaky. When some run names
    no failing test, or none fails in every run, the last run stands as it
    is. A run that timed out or could not run is not run again: a hang is no
    flake, and would cost its timeout again.
    """
    runs = [first]
    while runs[-1].ran and not runs[-1].passed and len(runs) <= retries:
        runs.append(again())
    if len(runs) == 1:
        return first
    last = runs[-1].model_copy(update={"runs": len(runs)})
    failing = [set(r.failed_tests or ()) for r in runs if not r.passed]
    if last.passed:
        return last.model_copy(update={"flaky_tests": sorted(set().union(*failing))})
    always = set.intersection(*failing)
    if not last.ran or any(r.failed_tests is None for r in runs) or not always:
        return last
    return last.model_copy(update={"failed_tests": sorted(always), "flaky_tests": sorted(set().union(*failing) - always)})


def flaky_names(tests: CheckResult) -> list[str]:
    """The flaky tests of a run, by id; a run that named none, as one entry."""
    if not tests.flaky:
        return []
    return tests.flaky_tests or [f"`{tests.command}` (failed, then passed; it names no failing test)"]


class _Stopped(Exception):
    pass


def _output(proc: subprocess.Popen[str], timeout_s: float, stop: threading.Event | None) -> str:
    """The command's output once it ends; TimeoutExpired past ``timeout_s``, _Stopped once ``stop`` is set."""
    if stop is None:
        return proc.communicate(timeout=timeout_s)[0]
    deadline = time.monotonic() + timeout_s
    while True:
        try:  # communicate may be called again after a timeout: nothing read is lost
            return proc.communicate(timeout=max(0.0, min(STOP_POLL_S, deadline - time.monotonic())))[0]
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
            if stop.is_set():
                raise _Stopped from None


def _lower_session_priority(pid: int) -> None:
    """Nice the whole session ``pid`` leads, where Linux schedules sessions as groups (autogroup).

    There a session competes with the others as one: a niced process in a session
    of its own would still take a full share. The session's processes, later
    ones too, share its group, so this holds for every process the check starts.
    """
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(BACKGROUND_NICE))


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
