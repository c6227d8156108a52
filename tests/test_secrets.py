"""Secrets in the environment never reach the audit trail, SQLite, Prefect's results, logs or artifacts."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from orchestrator.demo import PLAN, demo_scenario, make_sample_project, write_portfolio
from orchestrator.scripted import ScriptedModel, bash, structured, write
from orchestrator.secrets import redact

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
    from prefect import get_client

    from flows.project_cycle import project_cycle

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
        summary = asyncio.run(project_cycle(project="calc", config=str(config)))
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

    async def artifacts_and_logs() -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import FlowRunSort

        async with get_client() as client:
            run = (await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1))[0]
            artifacts = await client.read_artifacts()
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        return "\n".join([str(a.data) for a in artifacts] + [entry.message for entry in logs])

    shown = asyncio.run(artifacts_and_logs())
    assert "Make add faster" in shown and API_KEY not in shown and TOKEN not in shown
