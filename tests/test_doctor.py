"""``orch doctor``: one line per check, exit 1 only on a failed one, no secret shown, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orch_cli import orch
from test_bad_input import snapshot

from deployments.server import free_port
from orchestrator.adapters.git_commands import init_repo

CALC = "def add(a, b):\n    return a + b\n"
TESTS = ("import unittest\n\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
         "    def test_add(self):\n        self.assertEqual(add(1, 2), {})\n")
SECRET = "sk-ant-doctor-0123456789abcdef"
NAMES = ("git", "Claude Code CLI", "sandbox", "model credentials", "portfolio", "Prefect server",
         "project app", "data dir", "disk space")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, config or Prefect server of the machine's; a HOME of the test's own."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_BASE_URL",
                 "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "ORCH_CONFIG",
                 "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def portfolio(tmp_path: Path, **fields: object) -> Path:
    """A portfolio with project ``app`` (a repository with passing unittest tests) at ./app."""
    if not (tmp_path / "app").exists():
        init_repo(tmp_path / "app", {"calc.py": CALC, "test_calc.py": TESTS.format(3)})
    config = tmp_path / "orch.json"
    config.write_text(json.dumps({"data_dir": "data", "projects": [{
        "name": "app", "path": "app", "test_command": f"{sys.executable} -m unittest -q", **fields}]}))
    return config


def lines(out: str) -> dict[str, str]:
    """Check name -> its line."""
    found = {}
    for line in out.strip().splitlines()[:-1]:
        assert line[:2] in ("✓ ", "✗ ", "! "), line
        found[line[2:].split(": ", 1)[0]] = line
    return found


def test_doctor_on_this_machine_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    config = portfolio(tmp_path)
    before = snapshot(tmp_path)
    started = time.monotonic()

    code, out = orch(capsys, monkeypatch, "doctor", "--config", str(config))

    assert time.monotonic() - started < 30
    checks = lines(out)
    assert set(checks) == set(NAMES), out
    failed = [line for line in checks.values() if line.startswith("✗")]
    assert code == (1 if failed else 0), out
    assert out.strip().splitlines()[-1] == (f"{len(failed)} of {len(NAMES)} checks failed." if failed
                                            else f"All {len(NAMES)} checks passed.")
    assert checks["data dir"].startswith("✓") and "does not exist yet" in checks["data dir"]
    assert checks["project app"].startswith("✓") and "main branch main" in checks["project app"]
    assert "✓ Claude Code CLI: " in out and "(Claude Code)" in checks["Claude Code CLI"]
    assert "✗ model credentials: none of ANTHROPIC_API_KEY" in out
    assert snapshot(tmp_path) == before and not (tmp_path / "data").exists()


def _bin(tmp_path: Path, name: str, tools: dict[str, str]) -> Path:
    """A PATH folder with git and the given tools (name -> shell script)."""
    folder = tmp_path / name
    folder.mkdir()
    git_path = shutil.which("git")
    assert git_path is not None
    (folder / "git").symlink_to(git_path)
    for tool, script in tools.items():
        (folder / tool).write_text(f"#!/bin/sh\n{script}\n")
        (folder / tool).chmod(0o755)
    return folder


@pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs bubblewrap on Linux only")
def test_sandbox_with_and_without_bubblewrap(tmp_path: Path, capsys, monkeypatch) -> None:
    config = portfolio(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)  # all else passes, so the sandbox decides the exit

    monkeypatch.setenv("PATH", str(_bin(tmp_path, "without", {})))
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    sandbox = lines(out)["sandbox"]
    assert code == 1 and sandbox.startswith("✗ sandbox: bwrap and socat not on PATH"), out
    assert sandbox.endswith("— fix: apt-get install bubblewrap socat")

    monkeypatch.setenv("PATH", str(_bin(tmp_path, "with", {"bwrap": "exit 0", "socat": "exit 0"})))
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert code == 0 and lines(out)["sandbox"] == "✓ sandbox: bwrap and socat found; bwrap makes a sandbox", out

    refused = "echo 'bwrap: No permissions to create new namespace' >&2; exit 1"
    monkeypatch.setenv("PATH", str(_bin(tmp_path, "refused", {"bwrap": refused, "socat": "exit 0"})))
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert code == 1 and "✗ sandbox: bwrap cannot make a sandbox here: bwrap: No permissions" in out


def test_credentials_are_named_never_shown(tmp_path: Path, capsys, monkeypatch) -> None:
    config = portfolio(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"https://me:{SECRET}@proxy.example:8443/v1?key={SECRET}#x")

    _, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))

    line = lines(out)["model credentials"]
    assert line == ("✓ model credentials: ANTHROPIC_API_KEY set (value not shown, not tried against the API); "
                    "ANTHROPIC_BASE_URL is https://proxy.example:8443/v1")
    assert SECRET not in out and "sk-ant" not in out and SECRET[-8:] not in out and "me:" not in out


def test_a_claude_login_counts_only_where_agents_look(tmp_path: Path, capsys, monkeypatch) -> None:
    config = portfolio(tmp_path)
    login = tmp_path / "home" / ".claude"
    login.mkdir()
    (login / ".credentials.json").write_text(json.dumps({"claudeAiOauth": {"accessToken": SECRET}}))

    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    line = lines(out)["model credentials"]
    assert code == 1 and line.startswith(f"✗ model credentials: your `claude login` credential is in {login}")
    assert line.endswith(f"— fix: export CLAUDE_CONFIG_DIR={login}")

    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(login))
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert lines(out)["model credentials"] == (
        f"✓ model credentials: a `claude login` credential in {login} (CLAUDE_CONFIG_DIR)")
    assert SECRET not in out


def test_no_portfolio_points_at_orch_init(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = orch(capsys, monkeypatch, "doctor")
    assert code == 1
    assert lines(out)["portfolio"].startswith("✗ portfolio: no config file")
    assert "— fix: orch init" in lines(out)["portfolio"]
    assert "project app" not in out  # nothing to check per project

    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(tmp_path / "missing.json"))
    assert code == 1 and "missing.json: file not found — fix: orch init --config" in out


def test_a_project_that_is_not_a_repository_fails(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "plain").mkdir()
    config = tmp_path / "orch.json"
    config.write_text(json.dumps({"projects": [{"name": "app", "path": "plain"}]}))
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert code == 1 and "is not a git repository" in lines(out)["portfolio"] and "✗ portfolio" in out

    # A .git folder passes the config's own check; the repository check then fails.
    (tmp_path / "plain" / ".git").mkdir()
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert code == 1 and lines(out)["project app"].startswith("✗ project app: "), out
    assert "not a git repository" in lines(out)["project app"]

    config = portfolio(tmp_path, main_branch="develop")
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert code == 1 and "main_branch 'develop' does not exist" in lines(out)["project app"]


def test_a_prefect_server_named_but_not_answering_fails(tmp_path: Path, capsys, monkeypatch) -> None:
    config = portfolio(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config))
    assert code == 1 and lines(out)["Prefect server"].startswith("✗ Prefect server: http://127.0.0.1:")
    assert "(PREFECT_API_URL) does not answer" in out


def test_run_tests_runs_on_main_in_a_worktree_and_leaves_the_checkout_alone(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    config = portfolio(tmp_path, lint_command="no-such-linter .")
    repo = tmp_path / "app"
    (repo / "calc.py").write_text("def add(a, b):\n    return 0\n")  # the user's uncommitted work: not tested
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config), "--run-tests")
    checks = lines(out)
    assert checks["tests of app"].startswith(f"✓ tests of app: `{sys.executable} -m unittest -q` passed on main in ")
    assert checks["lint of app"].startswith("✗ lint of app: `no-such-linter .` could not run on main (exit 127)")
    assert code == 1

    # main's own tests fail; a command that ran in the checkout would leave `ran-here` behind.
    git(repo, "checkout", "-q", "--", "calc.py")
    (repo / "test_calc.py").write_text(TESTS.format(4))
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "a failing test")
    (repo / "notes.txt").write_text("the user's own\n")
    config = portfolio(tmp_path, test_command=f"touch ran-here && {sys.executable} -m unittest -q")
    before = snapshot(tmp_path)

    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config), "--run-tests")

    # A red main whose failures have ids is a warning: the judge compares failures by id.
    line = lines(out)["tests of app"]
    assert line.startswith("! tests of app: `touch ran-here && "), out
    assert "fails on main in " in line and "1 test(s) by id: test_add (test_calc." in line
    assert snapshot(tmp_path) == before
    # Failures with no test id would reject every branch: that fails the check.
    config = portfolio(tmp_path, test_command="echo something broke; exit 1")
    before = snapshot(tmp_path)
    code, out = orch(capsys, monkeypatch, "doctor", "-c", str(config), "--run-tests")
    line = lines(out)["tests of app"]
    assert code == 1 and line.startswith("✗ tests of app: `echo something broke; exit 1` failed on main (exit 1)")
    assert "something broke" in line and "failures that name no test id reject every branch" in line
    assert snapshot(tmp_path) == before
    assert not (repo / ".orch").exists()
    assert git(repo, "worktree", "list").count("\n") == 1 and git(repo, "branch", "--list", "orch/*") == ""
