"""``orch-leash``: run the Claude Code CLI so that it, and all it started, dies with its parent.

The SDK runs the CLI as a child of the process that runs the cycle. When that
process is stopped (Ctrl+C of ``orch start``, a deployment run cancelled or
crashed, a SIGKILL), Prefect signals its process group with SIGTERM, which
the CLI and its sandbox helpers outlive: the CLI goes on asking the model and
editing its worktree, paying for work nobody collects, while the resumed
cycle starts the same session again. The SDK's ``cli_path`` therefore points
here. On Linux the leash

- asks the kernel for SIGTERM when its parent dies, and makes the CLI get
  SIGKILL when the leash itself dies;
- adopts every process the CLI leaves behind (a child subreaper);
- on SIGTERM, SIGINT or SIGHUP, and once the CLI has exited, kills every
  process under it, then exits with the CLI's status.

The CLI stays in the caller's process group, so signals sent to the group
still reach it directly. Elsewhere the leash only becomes the CLI (``exec``).

The leash also gives the CLI only the environment the orchestrator allows
(see :mod:`orchestrator.adapters.fences`): the SDK passes the CLI everything its
caller has, the GitHub token and the user's other secrets included.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from types import FrameType

from orchestrator.adapters.fences import KEEP_ENV, keeps, parse_kept

CLI_ENV = "ORCH_LEASHED_CLI"
"""Names the real CLI for the leash (set by the agent runtime)."""
SESSION_ENV = "ORCH_SESSION"
"""Marks every process of one session with its id, whoever adopts it: see :func:`reap`."""
PROJECT_ENV = "ORCH_PROJECT"
"""Marks every process of a project's sessions with the project's repository."""

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def leash_path() -> Path | None:
    """The installed ``orch-leash`` next to this Python, if there is one."""
    path = Path(sys.executable).with_name("orch-leash")
    return path if path.is_file() else None


def real_cli() -> str | None:
    """The CLI the SDK would run: the one bundled with it, else ``claude`` on the PATH."""
    # Imported here, not at the top: the leash starts once per session and never needs it.
    from orchestrator.adapters.internals import bundled_claude_cli

    bundled = bundled_claude_cli()
    return str(bundled) if bundled is not None else shutil.which("claude")


def allowed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The CLI's environment: only what ``KEEP_ENV`` names (and the kept prefixes); all when unset."""
    if KEEP_ENV not in environ:
        return dict(environ)
    kept = parse_kept(environ[KEEP_ENV])
    return {name: value for name, value in environ.items()
            if (keeps(name, kept) or name in (SESSION_ENV, PROJECT_ENV)) and name != KEEP_ENV}


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def marked(name: str, value: str) -> list[int]:
    """Every other process whose environment has ``name=value`` (one of our marks)."""
    mark = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
    return found


def reap(name: str, value: str) -> list[int]:
    """SIGKILL every process whose environment has ``name=value`` (one of our marks); their pids.

    The leash kills what is under it, but a leash that is itself SIGKILLed
    (by hand, the OOM killer, with the whole process tree) leaves the CLI's
    children to init: a test run or a server a tool started would go on in
    the worktree. Each of them inherited the marks.
    """
    killed = []
    for pid in marked(name, value):
        with suppress(OSError):  # it ended meanwhile, or is not ours to kill
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _kill_all_under_me() -> None:
    killed = descendants(os.getpid())
    for pid in killed:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap them before exiting, so the CLI's end of the SDK's pipes is closed by then.
    for pid in killed:
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _kill_all_under_me()
    os._exit(128 + signum)


def main() -> None:
    parent = os.getppid()
    cli = os.environ.get(CLI_ENV)
    if not cli:
        sys.stderr.write(f"orch-leash: {CLI_ENV} is not set; it names the Claude Code CLI to run\n")
        sys.exit(127)
    args = [cli, *sys.argv[1:]]
    env = allowed_env(os.environ)
    if sys.platform != "linux":
        os.execve(cli, args, env)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:  # the parent died before the leash was on
        sys.exit(128 + signal.SIGTERM)
    cli_process = subprocess.Popen(args, env=env, preexec_fn=lambda: _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL))
    code = cli_process.wait()
    _kill_all_under_me()  # helpers the CLI left running
    sys.exit(code if code >= 0 else 128 - code)
