"""Running whole cycles in the test process: a sample project, its portfolio, the flow."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fake_github import FakeGitHub

from orchestrator.demo.sample import PLAN, demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import (
    Block,
    Fail,
    RequestView,
    Scenario,
    ScriptedModel,
    structured,
)
from orchestrator.domain.models import CycleSummary

T = TypeVar("T")


def sample_config(root: Path, **fields: Any) -> Path:
    """The demo's project ``calc`` under ``root``, its portfolio file with ``fields`` set on the project."""
    config = write_portfolio(root, make_sample_project(root))
    data = json.loads(config.read_text())
    portfolio_fields = {k: fields.pop(k) for k in ("webhook_url", "max_total_workers") if k in fields}
    data.update(portfolio_fields)
    data["projects"][0].update(fields)
    config.write_text(json.dumps(data, indent=2))
    return config


def set_fields(config: Path, **fields: Any) -> None:
    """Change fields of the (first) project in a portfolio file."""
    data = json.loads(config.read_text())
    data["projects"][0].update(fields)
    config.write_text(json.dumps(data, indent=2))


def use_model(model: ScriptedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in model.env().items():
        monkeypatch.setenv(key, value)


STAND_IN_FAULT = Fail(500, "stand-in fault")


def failing_first(answer: Callable[[RequestView], list[Block]], failures: int, fault: Fail = STAND_IN_FAULT,
                  only: Callable[[RequestView], bool] = lambda view: True) -> Callable[[RequestView], list[Block] | Fail]:
    """A turn whose first ``failures`` requests (of those ``only`` picks) get ``fault``, then ``answer``."""
    failed: list[int] = []

    def turn(view: RequestView) -> list[Block] | Fail:
        if only(view) and len(failed) < failures:
            failed.append(view.turn)
            return fault
        return answer(view)

    return turn


def run_cycle(config: Path, project: str = "calc", **params: Any) -> CycleSummary:
    """One ``project-cycle`` flow run, as ``orch run`` starts it (without a deployment)."""
    from flows.project_cycle import project_cycle

    return run_watched(project_cycle(project=project, config=str(config), **params))


SLOW_CALLBACK_S = 2.0
"""One step of the event loop may take this long at most: every project of a portfolio (its
agent sessions, slot renewals and progress) shares the loop, so any blocking call stalls them all.

Not less: on two cores busy with the suite's two test processes, the CLIs and the servers, a
step that does not block (the SDK parsing a line of JSON, with a garbage collection) once
took 1.2 s for want of CPU. What this catches takes seconds: tests, merges, git on a large
tree (the portfolio test's merged tests take 4 s)."""


def run_watched(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, failing if its event loop was ever blocked over ``SLOW_CALLBACK_S``.

    A heartbeat on the loop and a watching thread, rather than asyncio's debug
    mode: that mode's own bookkeeping slows every step it measures, and this
    way the failure shows the stack of what blocked the loop.
    """
    stalls: list[str] = []
    beat = [time.monotonic()]
    stop = threading.Event()

    def watch(loop_thread: int) -> None:
        reported = 0.0
        while not stop.wait(0.05):
            blocked = time.monotonic() - beat[0]
            if blocked > SLOW_CALLBACK_S and reported != beat[0]:
                reported = beat[0]
                frame = sys._current_frames().get(loop_thread)
                where = "".join(traceback.format_stack(frame)[-12:]) if frame else "(unknown)\n"
                stalls.append(f"blocked for over {blocked:.2f}s in:\n{where}")

    async def heartbeat() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(0.05)

    async def watched() -> T:
        threading.Thread(target=watch, args=(threading.get_ident(),), daemon=True).start()
        pulse = asyncio.ensure_future(heartbeat())
        try:
            return await main
        finally:
            stop.set()
            pulse.cancel()

    result = asyncio.run(watched())
    assert not stalls, "the event loop was blocked:\n" + "\n".join(stalls)
    return result


def as_in_a_terminal() -> None:
    """Ctrl+C as a shell in a terminal delivers it.

    A child inherits ignored signals, and the test process may be ignoring
    SIGINT at the moment it starts one (C's system() does so while it waits,
    whichever thread calls it). `orch start` respects an inherited SIGINT
    ignore, as a background job expects: seen once, it made Ctrl+C do nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def processes_under(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` or inside it (the CLI runs in its cwd)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def bare_origin(project: Path) -> Path:
    """A bare repository beside ``project``, made its ``origin`` with main pushed."""
    remote = project.parent / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "-q", "origin", "main")
    return remote


# Words of a backlog item's title -> the demo task that does it.
DOES = {"shout": "Add shout helper", "mean": "Add mean function", "faster": "Make add faster"}
# An item as the planner is shown it: its id line, then its title first in an untrusted-data block.
ITEM_LINE = re.compile(r"^- `([^`]+)`(?: \(already a task: \w+\))?\n<untrusted-data [^>]*>\n(.+)$", re.M)


def linking_planner(prompts: list[str], lessons: str = "") -> Any:
    """A planner turn that links the demo's tasks to the backlog items it is shown."""
    def answer(view: RequestView) -> list[dict[str, Any]]:
        prompts.append(view.prompt)
        shown = dict((title, item) for item, title in ITEM_LINE.findall(view.prompt))
        plan = copy.deepcopy(PLAN)
        plan["lessons"] = lessons
        for task in plan["tasks"]:
            task["backlog_item"] = next(
                (item for title, item in shown.items() for word, does in DOES.items()
                 if word in title.lower() and does == task["title"]), None)
        return [structured(plan)]
    return answer


def linking_scenario(prompts: list[str] | None = None, lessons: str = "") -> Scenario:
    """The demo's scenario with a planner that links its tasks to the backlog items shown."""
    scenario = demo_scenario()
    scenario.planner = [linking_planner([] if prompts is None else prompts, lessons)]
    return scenario


def commit_file(project: Path, name: str, content: str) -> None:
    """Write and commit one file on the project's checked-out branch."""
    (project / name).write_text(content)
    git(project, "add", name)
    git(project, "-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-qm", f"Add {name}")


def github_config(tmp_path: Path, gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> Path:
    """A sample project whose backlog is the fake's issues, its token in the environment."""
    monkeypatch.setenv("ORCH_TEST_GH_TOKEN", str(gh.token))
    return sample_config(tmp_path, backlog_source="github_issues", github_repo=gh.repo, github_api_url=gh.api_url,
                         github_token_env="ORCH_TEST_GH_TOKEN", **fields)


async def artifacts_and_logs() -> str:
    """Every artifact, and the logs of the newest flow run: what the Prefect UI shows."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        run = (await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1))[0]
        artifacts = await client.read_artifacts()
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return "\n".join([str(a.data) for a in artifacts] + [entry.message for entry in logs])


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.5)
    return value
