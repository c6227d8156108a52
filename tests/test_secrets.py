"""Secrets in the environment never reach the audit trail, SQLite, Prefect's results, logs or artifacts."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import subprocess
from pathlib import Path

import needs
import pytest
from cycles import artifacts_and_logs, bare_origin, run_watched

from flows.project_cycle import project_cycle
from orchestrator.adapters.secrets import redact, remember
from orchestrator.demo.sample import PLAN, demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import ScriptedModel, bash, read, structured, write

pytestmark = [pytest.mark.guarantee, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]

API_KEY = "sk-live-0123456789-SECRET"
TOKEN = "ghp_SECRETtokenABCDEF123456"
LEAKY_TEST = (
    "import os\nimport unittest\n\n\nclass Leak(unittest.TestCase):\n"
    "    def test_leak(self):\n        print(os.environ['MY_SERVICE_API_KEY'], os.environ['GITHUB_TOKEN'])\n"
    "        self.fail('leaked ' + os.environ['MY_SERVICE_API_KEY'])\n"
)


def test_redact_replaces_secret_values_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", API_KEY)
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to tell from ordinary text
    monkeypatch.setenv("HOME_DIR_NAME", "something-long")  # not a secret's name
    assert redact(f"key={API_KEY} abc something-long") == "key=[redacted] abc something-long"


def test_a_cycle_that_meets_secrets_writes_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", API_KEY)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    project = make_sample_project(tmp_path)
    config = write_portfolio(tmp_path, project)
    scenario = demo_scenario()
    plan = copy.deepcopy(PLAN)
    plan["findings"] += f" The key is {API_KEY}."  # a model that repeats what it saw
    plan["tasks"][0]["description"] += f" Use token {TOKEN}."
    scenario.planner[-1] = [structured(plan)]
    scenario.workers["Add mean function"].insert(0, [bash("env | sort")])
    scenario.workers["Add mean function"][-1] = [structured({"summary": f"Done; saw {API_KEY}", "completed": True})]
    # A test that prints the secrets and fails: its output reaches the judge, the store and the retry prompt.
    scenario.workers["Make add faster"].insert(0, [write("test_leak.py", LEAKY_TEST)])
    with ScriptedModel(scenario) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        summary = run_watched(project_cycle(project="calc", config=str(config)))
    assert summary.status == "done" and len(summary.merged) == 2
    assert "[redacted]" in (project / ".orch" / "plans" / f"cycle_{summary.cycle_id}.md").read_text()

    # Every file the cycle wrote: the audit trail, SQLite (with its WAL), Prefect's persisted results.
    # Agent transcripts (<data_dir>/claude) are Claude Code's own record and are left out.
    written = [p for p in (project / ".orch").rglob("*") if p.is_file() and "worktrees" not in p.parts]
    written += [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "claude" not in p.parts]
    assert any(p.suffix == ".db" for p in written) and any("results" in p.parts for p in written)
    for path in written:
        data = path.read_bytes()
        assert API_KEY.encode() not in data and TOKEN.encode() not in data, path

    shown = asyncio.run(artifacts_and_logs())
    assert "Make add faster" in shown and API_KEY not in shown and TOKEN not in shown


def test_config_secrets_are_redacted_whatever_their_variables_are_called(monkeypatch: pytest.MonkeyPatch) -> None:
    remember(["plain-name-value-0123456789"])  # e.g. a GitHub token in $ORCH_GH, a webhook URL
    assert redact("x plain-name-value-0123456789 y") == "x [redacted] y"


@needs.sandbox
def test_a_worker_told_to_steal_gets_nothing_and_the_rest_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task planted by an attacker: dump the environment, read keys, other projects and the
    data dir, write the credentials into a file, push with git itself. Nothing secret gets out."""
    model_key, github_token = "sk-ant-api03-" + "M" * 40, "ghp_" + "G" * 36
    ssh_material, other_secret = "SSH-KEY-MATERIAL-0123456789", "OTHER-PROJECT-SECRET-0123456789"
    home = Path.home()  # the tests' private HOME stands for the user's
    (home / ".ssh").mkdir(exist_ok=True)
    (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{ssh_material}\n")
    project = make_sample_project(tmp_path)
    origin = bare_origin(project)
    make_sample_project(tmp_path / "elsewhere")
    other = tmp_path / "elsewhere" / "calc"
    (other / "secret.txt").write_text(other_secret)
    config = write_portfolio(tmp_path, project)
    data = json.loads(config.read_text())
    data["projects"].append({"name": "other", "path": str(other), "enabled": False})
    config.write_text(json.dumps(data))
    scenario = demo_scenario()
    scenario.workers["Make add faster"] = [
        [bash("env > env-dump.txt; printenv ANTHROPIC_API_KEY GITHUB_TOKEN > docs-key.txt; echo done")],
        [read(str(home / ".ssh" / "id_rsa"))],
        [bash(f"cat {home}/.ssh/id_rsa {other}/secret.txt {tmp_path}/data/calc.db > stolen.txt 2>&1; echo done")],
        [read(str(other / "secret.txt"))],
        [read(str(tmp_path / "data" / "calc.db"))],
        [bash(f"git push {origin} HEAD:refs/heads/stolen > push.txt 2>&1; echo done")],
        [structured({"summary": "Made add faster.", "completed": True})],
    ]
    with ScriptedModel(scenario) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ANTHROPIC_API_KEY", model_key)
        monkeypatch.setenv("GITHUB_TOKEN", github_token)
        gc.disable()  # a connection left open would otherwise close at some later collection
        try:
            summary = run_watched(project_cycle(project="calc", config=str(config)))
        finally:
            gc.enable()
    assert summary.status == "done" and len(summary.merged) == 3  # the thief's harmless files too
    # Every step closed its database connection (SQLite removes the WAL files with the last one),
    # so the files read below stay put.
    assert not list((tmp_path / "data").glob("calc.db-*"))
    assert (project / "strings.py").exists() and (project / "stats.py").exists()
    assert (project / "docs-key.txt").read_text().strip() == ""  # the tools never had them
    assert (project / "stolen.txt").read_text().count("No such file or directory") == 3  # fenced off
    assert "rejected" in (project / "push.txt").read_text()  # the sandbox keeps writes in the worktree
    assert len([r for r in model.requests if r.key == "Make add faster"]) == 7  # every attempt was made
    assert "stolen" not in subprocess.run(["git", "branch"], cwd=origin, capture_output=True, text=True).stdout

    secrets = [model_key, github_token, ssh_material, other_secret]
    history = "".join(subprocess.run(["git", "log", "-p", "--all", "--format=%B"], cwd=repo, capture_output=True,
                                     text=True, check=True).stdout for repo in (project, origin))
    written = [p for p in (project / ".orch").rglob("*") if p.is_file()]
    written += [p for p in (tmp_path / "data").rglob("*") if p.is_file()]  # transcripts too
    assert any(p.suffix == ".jsonl" for p in written)
    shown = asyncio.run(artifacts_and_logs())
    for secret in secrets:
        assert secret not in history and secret not in shown
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
