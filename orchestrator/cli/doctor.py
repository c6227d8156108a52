"""``orch doctor``: is this machine, and the portfolio, ready for cycles?

Each check is a function returning a :class:`Diagnosis`: passed, failed, or
passed with a warning worth a look. Nothing here writes: no store, no data
dir, no Prefect server (``deployments.server`` only asks over HTTP, with the
standard library, so Prefect is never imported and the checks take seconds).
Only ``--run-tests`` writes, and only for as long as it runs: a worktree of
main per project under ``.orch/worktrees``, where the judge runs the tests
too, removed afterwards with its branch.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orchestrator.adapters.checks import run_check
from orchestrator.adapters.git_repo import GitRepo
from orchestrator.adapters.leash import leash_path, real_cli
from orchestrator.adapters.portfolio_file import find_config, load_portfolio
from orchestrator.domain.config import PortfolioConfig, ProjectConfig
from orchestrator.domain.errors import ConfigError, GitError
from orchestrator.domain.models import CheckResult

__all__ = ["GIT_MIN", "MIN_FREE_BYTES", "Diagnosis", "diagnose", "safe_url"]

GIT_MIN = (2, 28)
"""Oldest git supported: ``worktree remove`` needs 2.17, ``git init -b`` (the demo's sample) 2.28."""
MIN_FREE_BYTES = 1 << 30
"""Free space the data dir needs: stores, agent transcripts and Prefect results grow there."""
CLI_TIMEOUT_S = 20
KEY_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
"""Environment variables the Claude Code CLI takes a credential from."""
_CLOUDS = {"CLAUDE_CODE_USE_BEDROCK": "Amazon Bedrock", "CLAUDE_CODE_USE_VERTEX": "Google Vertex AI"}


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of one check: only ``ok=False`` makes ``orch doctor`` fail."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False
    """Passed, but worth a look (shown with '!')."""

    @property
    def mark(self) -> str:
        """✓, ✗, or ! for a warning."""
        return "✗" if not self.ok else "!" if self.warning else "✓"

    def line(self) -> str:
        """The check as one line of text."""
        text = f"{self.mark} {self.name}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix and (self.warning or not self.ok) else text


def diagnose(config: str | None = None, run_tests: bool = False) -> Iterator[Diagnosis]:
    """Every check in order, each as soon as it is done."""
    yield check_git()
    yield check_cli()
    yield check_sandbox()
    portfolio, loaded = check_portfolio(config)
    data_dir = portfolio.data_dir if portfolio else None
    yield check_credentials(data_dir)
    yield loaded
    yield check_prefect(data_dir)
    if portfolio is None:
        return
    for project in portfolio.projects:
        yield check_project(project)
    yield check_data_dir(portfolio.data_dir)
    yield check_disk(portfolio.data_dir)
    if run_tests:
        for project in portfolio.enabled_projects():
            yield from check_commands(project)


def check_git() -> Diagnosis:
    """git is on PATH and new enough."""
    need = ".".join(map(str, GIT_MIN))
    git = shutil.which("git")
    if git is None:
        return Diagnosis("git", False, "not on PATH", f"install git {need} or newer")
    try:
        out = subprocess.run([git, "--version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Diagnosis("git", False, f"{git} --version failed: {exc}", "reinstall git")
    found = re.search(r"(\d+)\.(\d+)", out)
    if found is None or (int(found[1]), int(found[2])) < GIT_MIN:
        return Diagnosis("git", False, f"{out or 'no version'} ({git}) is older than {need}",
                         f"install git {need} or newer (worktrees and `git init -b` need it)")
    return Diagnosis("git", True, f"{out} ({git})")


def check_cli() -> Diagnosis:
    """The Claude Code CLI the agents run starts and tells its version."""
    name = "Claude Code CLI"
    try:
        cli = real_cli()
    except ImportError as exc:
        return Diagnosis(name, False, f"claude-agent-sdk cannot be imported: {exc}", "reinstall: pip install -e .")
    if cli is None:
        return Diagnosis(name, False, "not bundled with claude-agent-sdk and no `claude` on PATH",
                         "reinstall claude-agent-sdk (its wheel bundles the CLI)")
    # Without it the CLI also probes hosts other than the model API.
    env = {**os.environ, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    try:
        run = subprocess.run([cli, "--version"], env=env, capture_output=True, text=True,
                             timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Diagnosis(name, False, f"{cli} --version gave no answer in {CLI_TIMEOUT_S} s",
                         "reinstall claude-agent-sdk")
    except OSError as exc:
        return Diagnosis(name, False, f"{cli} does not start: {exc.strerror}", "reinstall claude-agent-sdk")
    if run.returncode != 0:
        said = _last_line(run.stderr or run.stdout)
        return Diagnosis(name, False, f"{cli} --version exited {run.returncode}: {said}",
                         "reinstall claude-agent-sdk")
    detail = f"{run.stdout.strip()} ({cli})"
    if leash_path() is None:
        return Diagnosis(name, True, f"{detail}; orch-leash is not installed next to {sys.executable}, "
                         "so an agent outlives a killed run", "reinstall this package (pip install -e .)",
                         warning=True)
    return Diagnosis(name, True, detail)


def check_sandbox() -> Diagnosis:
    """Linux: bubblewrap and socat, which Claude Code's sandbox (the only way workers run commands) needs."""
    name = "sandbox"
    if sys.platform == "darwin":
        return Diagnosis(name, True, "macOS: Claude Code uses the built-in sandbox-exec")
    if sys.platform != "linux":
        return Diagnosis(name, True, f"not checked on {sys.platform}", warning=True)
    missing = [tool for tool in ("bwrap", "socat") if shutil.which(tool) is None]
    if missing:
        return Diagnosis(name, False, f"{' and '.join(missing)} not on PATH: without Claude Code's "
                         "sandbox workers cannot run commands (tests, builds), only edit files",
                         "apt-get install bubblewrap socat")
    try:  # installed is not enough: user namespaces may be off (containers, Ubuntu 24.04's AppArmor)
        run = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-net", "true"],
                             capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        run = subprocess.CompletedProcess([], 1, "", str(exc))
    if run.returncode != 0:
        return Diagnosis(name, False, f"bwrap cannot make a sandbox here: {_last_line(run.stderr)}",
                         "allow unprivileged user namespaces for bwrap (see Claude Code's sandboxing docs)")
    return Diagnosis(name, True, "bwrap and socat found; bwrap makes a sandbox")


def safe_url(url: str) -> str:
    """A URL fit to print: scheme, host, port and path; no user, password, query or fragment."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(set, not a valid URL)"
    if not parts.scheme or not host:
        return "(set, not a URL)"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_credentials(data_dir: Path | None) -> Diagnosis:
    """Something the CLI can authenticate with; names where it was found, never a value."""
    name = "model credentials"
    base = os.environ.get("ANTHROPIC_BASE_URL", "").strip()
    where = f"; ANTHROPIC_BASE_URL is {safe_url(base)}" if base else ""
    found = [var for var in KEY_VARS if os.environ.get(var, "").strip()]
    if found:
        return Diagnosis(name, True, f"{', '.join(found)} set (value not shown, not tried against the API){where}")
    cloud = next((f"{label} ({var})" for var, label in _CLOUDS.items()
                  if os.environ.get(var, "").strip().lower() not in ("", "0", "false")), None)
    if cloud:
        return Diagnosis(name, True, f"{cloud}: its credentials come from that cloud's own set-up, not checked here")
    # Agents use CLAUDE_CONFIG_DIR when it is set, else <data_dir>/claude (see agent.py).
    chosen = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    agents_dir = Path(chosen).expanduser() if chosen else data_dir / "claude" if data_dir else None
    if agents_dir is not None and (agents_dir / ".credentials.json").is_file():
        how = " (CLAUDE_CONFIG_DIR)" if chosen else ""
        return Diagnosis(name, True, f"a `claude login` credential in {agents_dir}{how}{where}")
    home_dir = Path.home() / ".claude"
    if not chosen and (home_dir / ".credentials.json").is_file():
        return Diagnosis(name, False, f"your `claude login` credential is in {home_dir}, but agents look in "
                         f"{agents_dir or '<data_dir>/claude'} unless CLAUDE_CONFIG_DIR is set",
                         f"export CLAUDE_CONFIG_DIR={home_dir}")
    looked = f", and no `claude login` credential in {agents_dir}" if agents_dir else ""
    return Diagnosis(name, False, f"none of {', '.join(KEY_VARS)} is set{looked}{where}",
                     "export ANTHROPIC_API_KEY=... (or `claude login` with CLAUDE_CONFIG_DIR set, kept set for orch)")


def check_portfolio(config: str | None) -> tuple[PortfolioConfig | None, Diagnosis]:
    """The portfolio file ``orch`` would use, loaded and validated."""
    name = "portfolio"
    try:
        source = find_config(config)
    except ConfigError as exc:
        return None, Diagnosis(name, False, str(exc), "orch init (in your project's folder) writes ./orch.json")
    try:
        portfolio = load_portfolio(source)
    except ConfigError as exc:
        fix = f"orch init --config {source}" if not source.exists() else "correct the file"
        return None, Diagnosis(name, False, str(exc), fix)
    count, enabled = len(portfolio.projects), len(portfolio.enabled_projects())
    detail = f"{portfolio.source}: {count} project(s), {enabled} enabled"
    if not enabled:
        return portfolio, Diagnosis(name, True, detail, f"orch init --add --config {source} PATH", warning=True)
    return portfolio, Diagnosis(name, True, detail)


def check_prefect(data_dir: Path | None) -> Diagnosis:
    """The Prefect server ``orch run`` would use, as it finds one; none is fine (it starts one)."""
    # Standard library only: asking costs no Prefect import.
    from deployments.server import DEFAULT_API_URL, healthy, running_server

    name = "Prefect server"
    chosen = os.environ.get("PREFECT_API_URL", "").strip()
    if chosen:
        shown = safe_url(chosen)
        if healthy(chosen):
            return _database(_leases(Diagnosis(name, True, f"{shown} (PREFECT_API_URL) answers"), chosen), chosen)
        return Diagnosis(name, False, f"{shown} (PREFECT_API_URL) does not answer",
                         "start it (`prefect server start`), or unset PREFECT_API_URL")
    if data_dir is not None:
        url = running_server(data_dir)
    else:
        url = DEFAULT_API_URL if healthy(DEFAULT_API_URL) else None
    if url is None:
        return Diagnosis(name, True, "none running; orch run/demo start one")
    how = "Prefect's default address" if url == DEFAULT_API_URL else "the one `orch start` recorded"
    return _database(_leases(Diagnosis(name, True, f"{safe_url(url)} answers ({how})"), url), url)


def _database(found: Diagnosis, api_url: str) -> Diagnosis:
    """The server's database, and a warning when hosts seem to share a SQLite one."""
    from deployments.server import server_backend, shared_sqlite

    backend = server_backend(api_url)
    detail = f"{found.detail}; database: {backend or 'not named (not started by orch server or orch start)'}"
    if warning := shared_sqlite(api_url, backend):  # the backend read once
        fix = "orch server --database-url postgresql+asyncpg://... on the server's host"
        return Diagnosis(found.name, True, f"{detail}; {warning}", "; ".join(filter(None, [found.fix, fix])),
                         warning=True)
    return Diagnosis(found.name, found.ok, detail, found.fix, found.warning)


def _leases(found: Diagnosis, api_url: str) -> Diagnosis:
    """A warning on a server that keeps its concurrency leases in memory: a restart leaks agent slots."""
    from deployments.server import DURABLE_LEASES, LEASE_STORAGE_VAR, lease_storage

    storage = lease_storage(api_url)
    if storage is None or not storage.endswith(".memory"):
        return found
    return Diagnosis(found.name, True, f"{found.detail}, but keeps agent-slot leases in memory: a restart "
                     "while agents run leaks their slots for good",
                     f"restart it with {LEASE_STORAGE_VAR}={DURABLE_LEASES}", warning=True)


def check_project(project: ProjectConfig) -> Diagnosis:
    """The project's path is a git checkout with its main branch."""
    name = f"project {project.name}"
    try:
        repo = GitRepo(project.path, project.main_branch)
        head = repo.head()[:12]
    except GitError as exc:
        return Diagnosis(name, False, str(exc), "fix path or main_branch in the portfolio")
    detail = f"{repo.path}, main branch {repo.main} at {head}" + ("" if project.enabled else " (disabled)")
    if not project.test_command:
        return Diagnosis(name, True, f"{detail}; no test_command, so the judge runs no tests",
                         "set test_command", warning=True)
    return Diagnosis(name, True, detail)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_data_dir(data_dir: Path) -> Diagnosis:
    """The data dir, or the folder it will be made in, is writable (nothing is created to find out)."""
    name = "data dir"
    base = _nearest_existing(data_dir)
    if not base.is_dir():
        return Diagnosis(name, False, f"{base} is not a folder", "point data_dir at a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        return Diagnosis(name, False, f"{base} is not writable by this user",
                         "make it writable, or point data_dir elsewhere")
    if base == data_dir:
        return Diagnosis(name, True, f"{data_dir} is writable")
    return Diagnosis(name, True, f"{data_dir} does not exist yet; {base}, where it will be made, is writable")


def check_disk(data_dir: Path) -> Diagnosis:
    """Enough free space where the data dir is."""
    base = _nearest_existing(data_dir)
    free = shutil.disk_usage(base).free
    gib = free / (1 << 30)
    if free < MIN_FREE_BYTES:
        return Diagnosis("disk space", False, f"{gib:.2f} GiB free at {base}, under 1 GiB",
                         "free some space: stores, transcripts, Prefect results and worktrees need it")
    return Diagnosis("disk space", True, f"{gib:.1f} GiB free at {base}")


def check_commands(project: ProjectConfig) -> Iterator[Diagnosis]:
    """Run the project's test and lint commands on main, in a worktree as the judge does."""
    try:
        repo = GitRepo(project.path, project.main_branch)
    except GitError:
        return  # check_project has said why
    if not project.test_command:
        yield Diagnosis(f"tests of {project.name}", True, "no test_command to run", "set test_command",
                        warning=True)
    commands = [(kind, command, timeout) for kind, command, timeout in (
        ("tests", project.test_command, project.test_timeout_seconds),
        ("lint", project.lint_command, project.lint_timeout_seconds)) if command]
    if not commands:
        return
    try:
        with _scratch_worktree(repo, project.git_branch_prefix) as worktree:
            for kind, command, timeout in commands:
                yield _command_diagnosis(f"{kind} of {project.name}", kind, repo.main,
                                         run_check(command, worktree, timeout))
    except GitError as exc:
        yield Diagnosis(f"tests of {project.name}", False, f"no worktree of main to run them in: {exc}",
                        "see the git error")


@contextmanager
def _scratch_worktree(repo: GitRepo, prefix: str) -> Iterator[Path]:
    """A worktree of main under .orch/worktrees, removed with its branch (and folders made for it)."""
    name = f"doctor-{secrets.token_hex(4)}"
    made = [d for d in (repo.orch_dir, repo.orch_dir / "worktrees") if not d.exists()]
    try:
        yield repo.add_worktree(name, f"{prefix}/{name}", repo.main)
    finally:
        repo.remove_worktree(name, f"{prefix}/{name}")
        for folder in reversed(made):
            with suppress(OSError):
                folder.rmdir()


def _command_diagnosis(name: str, kind: str, main: str, result: CheckResult) -> Diagnosis:
    shown = f"`{result.command}`"
    took = f"in {result.duration_s:.1f} s"
    if result.passed:
        return Diagnosis(name, True, f"{shown} passed on {main} {took}")
    said = _last_line(result.output)
    if result.timed_out:
        return Diagnosis(name, False, f"{shown} timed out on {main} {took}",
                         f"raise {'test' if kind == 'tests' else 'lint'}_timeout_seconds, or make it faster")
    if not result.ran:
        return Diagnosis(name, False, f"{shown} could not run on {main} (exit {result.exit_code}): {said}",
                         "install what it needs, or fix the command (it runs in a worktree of main)")
    if kind == "lint":  # the judge rejects only new lint failures, so a red base weakens it, no more
        return Diagnosis(name, True, f"{shown} fails on {main} (exit {result.exit_code}) {took}: {said}",
                         "clean up lint on main, so that it guards every branch", warning=True)
    if result.failed_tests:  # the judge compares failures by test id: branches can still pass
        failing = ", ".join(result.failed_tests[:3]) + (" ..." if len(result.failed_tests) > 3 else "")
        return Diagnosis(name, True, f"{shown} fails on {main} {took}, {len(result.failed_tests)} test(s) "
                         f"by id: {failing}", "fix them on main: until then a branch passes only if it "
                         "breaks no other test", warning=True)
    return Diagnosis(name, False, f"{shown} failed on {main} (exit {result.exit_code}) {took}: {said}",
                     "make the tests pass on main before the first cycle: failures that name no test "
                     "id reject every branch")


def _last_line(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[exit ")]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= limit else line[: limit - 3] + "..."
