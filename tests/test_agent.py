"""The agent runtime: the real SDK and CLI against the scripted model."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import anyio
import needs
import pytest
from cycles import failing_first, processes_under
from pydantic import BaseModel, field_validator

from orchestrator.adapters.agent import AgentSpec, WaitTool, run_agent, session_uuid
from orchestrator.adapters.fences import Fence
from orchestrator.demo.scripted import (
    CHECKS_TOOL,
    Fail,
    RequestView,
    Scenario,
    ScriptedModel,
    bash,
    edit,
    read,
    structured,
    text,
    tool,
    write,
)
from orchestrator.domain.errors import AgentError
from orchestrator.domain.models import AgentRun, Role

# Each test starts the real Claude Code CLI, about a second of CPU: the slow tier, so the fast one stays under a minute.
pytestmark = [pytest.mark.slow, pytest.mark.guarantee, pytest.mark.usefixtures("agent_env")]


class Answer(BaseModel):
    answer: str


def spec(tmp_path: Path, role: Role = Role.planner, **overrides) -> AgentSpec:
    values = dict(
        role=role, model="haiku", system_prompt="Answer briefly.", cwd=tmp_path, max_budget_usd=1.0,
        timeout_s=60, max_turns=5, task_id="t1", output_model=Answer,
        session_id=session_uuid("test", tmp_path.name, role.value), config_dir=tmp_path / "claude",
    )
    values.update(overrides)
    return AgentSpec(**values)


def run(model: ScriptedModel, monkeypatch: pytest.MonkeyPatch, agent: AgentSpec, prompt: str = "go"):
    for key, value in model.env().items():
        monkeypatch.setenv(key, value)
    return anyio.run(run_agent, agent, prompt)


def test_structured_output_cost_and_read_only_tools(tmp_path: Path, monkeypatch) -> None:
    with ScriptedModel(Scenario(planner=[[text("thinking")], [structured({"answer": "42"})]])) as model:
        result = run(model, monkeypatch, spec(tmp_path))
    assert result.structured == {"answer": "42"}
    assert result.session_id == spec(tmp_path).session_id
    assert result.num_turns >= 2
    assert result.cost_usd == pytest.approx(model.cost_usd(), abs=1e-12) and result.cost_usd > 0
    offered = set(model.requests[0].tools)
    assert offered - {"StructuredOutput", "DeferredToolPlaceholder"} == {"Read", "Grep", "Glob"}


def test_a_finished_session_is_read_back_from_its_transcript_not_asked_again(tmp_path: Path, monkeypatch) -> None:
    # As after a kill that came between the model's final answer and its recording.
    answer = [structured({"answer": "42"})]
    with ScriptedModel(Scenario(planner=[[text("thinking")], answer, answer])) as model:
        first = run(model, monkeypatch, spec(tmp_path))
        asked = len(model.requests)
        again = run(model, monkeypatch, spec(tmp_path))
        assert len(model.requests) == asked
        assert (again.structured, again.session_id) == (first.structured, first.session_id)
        assert again.cost_usd == pytest.approx(first.cost_usd)  # what it cost, to record now
        # Where an answer is worth nothing without the files it left, the session is asked again.
        run(model, monkeypatch, spec(tmp_path, replay=False))
        assert len(model.requests) > asked


@needs.sandbox
def test_worker_edits_files_with_real_tools_and_gets_only_the_allowed_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ORCH_TEST_MARKER", "from-the-user")  # opted in through agent_env
    monkeypatch.setenv("ORCH_TEST_OTHER", "not-opted-in")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 36)
    scenario = Scenario(workers={"Make files": [
        [write("hello.txt", "hello\n")],
        [bash('echo "$ORCH_TEST_MARKER|$ORCH_TEST_OTHER|$GITHUB_TOKEN|$ANTHROPIC_API_KEY|$HOME" > marker.txt')],
        [structured({"answer": "done"})],
    ]})
    with ScriptedModel(scenario) as model:
        run(model, monkeypatch, spec(tmp_path, Role.worker, fence=Fence(env_names=("ORCH_TEST_MARKER",))),
            "Make files please")
    assert (tmp_path / "hello.txt").read_text() == "hello\n"
    marker, other, token, model_key, home = (tmp_path / "marker.txt").read_text().strip().split("|")
    assert (marker, other, token, model_key) == ("from-the-user", "", "", "")
    assert home and home != os.environ["HOME"] and not Path(home).exists()  # its own, gone with it
    assert {"Read", "Edit", "Write", "Bash", "Grep", "Glob"} <= set(model.requests[0].tools)


def test_text_only_answer_is_an_error(tmp_path: Path, monkeypatch) -> None:
    with ScriptedModel(Scenario(planner=[[text("I refuse to use the tool.")]])) as model:
        with pytest.raises(AgentError) as info:
            run(model, monkeypatch, spec(tmp_path))
    assert info.value.subtype == "no_structured_output" and not info.value.transient


def test_output_that_breaks_the_schema_fails_after_the_clis_retries(tmp_path: Path, monkeypatch) -> None:
    class Strict(BaseModel):
        answer: str
        score: int

    with ScriptedModel(Scenario(planner=[[structured({"answer": "x"})]] * 6)) as model:
        with pytest.raises(AgentError) as info:
            run(model, monkeypatch, spec(tmp_path, output_model=Strict, max_turns=10))
    assert info.value.subtype == "error_max_structured_output_retries"
    assert "score" in str(info.value)


def test_output_our_model_refuses_is_an_error(tmp_path: Path, monkeypatch) -> None:
    class Shouted(BaseModel):
        answer: str

        @field_validator("answer")
        @classmethod
        def upper(cls, value: str) -> str:  # a rule no JSON schema expresses
            if value != value.upper():
                raise ValueError("must be upper case")
            return value

    with ScriptedModel(Scenario(planner=[[structured({"answer": "quiet"})]])) as model:
        with pytest.raises(AgentError) as info:
            run(model, monkeypatch, spec(tmp_path, output_model=Shouted))
    assert info.value.subtype == "invalid_output"
    assert "answer" in str(info.value) and "upper case" in str(info.value)


@pytest.mark.parametrize(("status", "transient"), [(529, True), (401, False)])
def test_api_errors_say_whether_a_retry_can_help(tmp_path: Path, monkeypatch, status: int, transient: bool) -> None:
    with ScriptedModel(Scenario(planner=[Fail(status, "scripted failure")])) as model:
        with pytest.raises(AgentError) as info:
            run(model, monkeypatch, spec(tmp_path))
    assert info.value.transient is transient
    assert str(status) in str(info.value)


def test_a_worker_cannot_write_outside_its_worktree(tmp_path: Path, monkeypatch) -> None:
    worktree, outside = tmp_path / "worktree", tmp_path / "outside"
    worktree.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("original\n")
    scenario = Scenario(workers={"Escape": [
        [write("inside.txt", "mine\n")],
        [bash("echo mine > inside-bash.txt")],
        [write(str(outside / "written.txt"), "escaped\n")],
        [write("../outside/relative.txt", "escaped\n")],
        [read(str(outside / "victim.txt"))],
        [edit(str(outside / "victim.txt"), "original", "escaped")],
        [bash(f"echo escaped > {outside}/bash.txt; echo escaped >> {outside}/victim.txt")],
        [structured({"answer": "done"})],
    ]})
    with ScriptedModel(scenario) as model:
        result = run(model, monkeypatch, spec(worktree, Role.worker, max_turns=10), "Escape, then report")
    assert result.structured == {"answer": "done"}
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "original\n"
    assert (worktree / "inside.txt").read_text() == "mine\n"
    if needs.sandbox_available():  # Bash runs only inside the sandbox; without it Bash is refused
        assert (worktree / "inside-bash.txt").read_text() == "mine\n"


def flaky(failures: int, status: int = 529):
    """A turn that fails its first ``failures`` requests with ``status``, then answers."""
    return failing_first(lambda view: [structured({"answer": "after the storm"})], failures,
                         Fail(status, "scripted overload"))


def test_transient_api_errors_are_retried_resuming_the_session(tmp_path: Path, monkeypatch) -> None:
    # Three failures: the CLI's own retry takes one, ours the others (two resumes).
    scenario = Scenario(planner=[[text("first look")], flaky(3)])
    with ScriptedModel(scenario) as model:
        result = run(model, monkeypatch, spec(tmp_path, api_retries=3, retry_base_s=0.05))
    assert result.structured == {"answer": "after the storm"}
    # The finished first turn was not asked for again: resumed, not restarted.
    assert [r.turn for r in model.requests if r.status == 200] == [0, 1]
    assert len({r.session_id for r in model.requests}) == 1
    # Every answered request is counted once, whatever the number of tries.
    assert result.cost_usd == pytest.approx(model.cost_usd(), abs=1e-12)


def test_retries_give_up_after_their_count(tmp_path: Path, monkeypatch) -> None:
    with ScriptedModel(Scenario(planner=[flaky(100)])) as model:
        with pytest.raises(AgentError) as info:
            run(model, monkeypatch, spec(tmp_path, api_retries=1, retry_base_s=0.05))
    assert info.value.transient and "529" in str(info.value)
    assert len(model.requests) == 4  # two tries, each with the CLI's own single retry


def test_permanent_api_errors_are_not_retried(tmp_path: Path, monkeypatch) -> None:
    with ScriptedModel(Scenario(planner=[flaky(100, status=401)])) as model:
        with pytest.raises(AgentError) as info:
            run(model, monkeypatch, spec(tmp_path, api_retries=3, retry_base_s=0.05))
    assert not info.value.transient and "401" in str(info.value)
    assert len(model.requests) <= 2  # at most the CLI's own retry; ours would make it 8


def test_turn_cap_ends_the_run(tmp_path: Path, monkeypatch) -> None:
    looping = Scenario(workers={"loop": [[bash("true")]] * 10})
    with ScriptedModel(looping) as model, pytest.raises(AgentError) as info:
        run(model, monkeypatch, spec(tmp_path, Role.worker, max_turns=2), "loop")
    assert info.value.subtype == "error_max_turns"
    assert len(model.requests) <= 3


def test_budget_cap_ends_the_run_and_reports_what_was_spent(tmp_path: Path, monkeypatch) -> None:
    # Each scripted response costs $0.00015 on haiku: the cap stops the loop a few turns in.
    looping = Scenario(workers={"loop": [[bash("true")]] * 10})
    with ScriptedModel(looping) as model, pytest.raises(AgentError) as info:
        run(model, monkeypatch, spec(tmp_path, Role.worker, max_budget_usd=0.0005), "loop")
    assert info.value.subtype == "error_max_budget_usd" and not info.value.transient
    assert len(model.requests) < 10
    assert info.value.cost_usd == pytest.approx(model.cost_usd(), abs=1e-9)


@pytest.mark.slow
def test_a_session_that_goes_quiet_is_cut_and_resumed_under_its_own_id(tmp_path: Path, monkeypatch) -> None:
    release, hung = threading.Event(), threading.Event()

    def hangs_once(view: RequestView) -> list[dict]:
        if hung.is_set():  # the resumed session asks the cut turn again
            return [structured({"answer": "back"})]
        hung.set()
        release.wait(60)  # the API takes the request and says nothing, for longer than the timeout
        return [text("too late")]

    scenario = Scenario(planner=[[text("first look")], hangs_once])
    with ScriptedModel(scenario) as model:
        try:
            result = run(model, monkeypatch, spec(tmp_path, timeout_s=40, stall_s=6, api_retries=1, retry_base_s=0.05))
            asked = [r.turn for r in model.requests]  # the hung request is not recorded until it answers
        finally:
            release.set()
    assert result.structured == {"answer": "back"}
    assert len({r.session_id for r in model.requests}) == 1
    assert asked == [0, 1]  # the first turn is not asked again: resumed, not restarted


@pytest.mark.slow
@needs.sandbox
def test_a_tool_that_runs_longer_than_the_stall_limit_is_not_cut(tmp_path: Path, monkeypatch) -> None:
    results: list[str] = []

    def done(view: RequestView) -> list[dict]:
        results.extend(view.results)
        return [text("done")]

    # The limit leaves room for a slow start of the CLI on busy cores; the command outlasts it twice over.
    napping = Scenario(workers={"nap": [[bash("sleep 12 && echo rested")], done]})
    with ScriptedModel(napping) as model:
        result = run(model, monkeypatch, spec(tmp_path, Role.worker, output_model=None, stall_s=6), "nap")
    assert result.text == "done"
    assert [r.turn for r in model.requests] == [0, 1]  # one session, never cut
    assert any("rested" in r for r in results)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


@pytest.mark.slow
@needs.sandbox
def test_a_leash_killed_outright_leaves_no_process_of_its_session(tmp_path: Path, monkeypatch) -> None:
    outcome: dict[str, object] = {}
    agent = spec(tmp_path, Role.worker, output_model=None)
    with ScriptedModel(Scenario(workers={"nap": [[bash("python3 -c \"import time; time.sleep(300)\"")], [text("done")]]})) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)

        def session() -> None:
            try:
                outcome["run"] = anyio.run(run_agent, agent, "nap")
            except AgentError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=session)
        thread.start()
        deadline = time.monotonic() + 60
        while not [p for p in processes_under(tmp_path) if b"time.sleep(300)" in cmdline(p)]:
            assert time.monotonic() < deadline, "the tool's command never started"
            time.sleep(0.2)
        [leash] = [p for p in processes_under(tmp_path) if b"orch-leash" in cmdline(p)]
        os.kill(leash, signal.SIGKILL)  # its own clean-up never runs
        thread.join(60)
    assert "error" in outcome  # the session ended, cut short
    assert processes_under(tmp_path) == []  # the tool's command went with it


def test_a_cli_killed_from_outside_is_resumed_under_its_own_id(tmp_path: Path, monkeypatch) -> None:
    asked, killed = threading.Event(), threading.Event()

    def first_look(view: RequestView) -> list[dict]:
        if not asked.is_set():
            asked.set()
            killed.wait(30)  # the CLI is killed while it waits for this answer
        return [text("looked")]

    scenario = Scenario(planner=[first_look, [structured({"answer": "42"})]])
    with ScriptedModel(scenario) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        outcome: dict[str, object] = {}

        def session() -> None:
            outcome["run"] = anyio.run(run_agent, spec(tmp_path, api_retries=1, retry_base_s=0.05), "go")

        thread = threading.Thread(target=session)
        thread.start()
        assert asked.wait(60)
        [cli] = [p for p in processes_under(tmp_path) if cmdline(p).split(b" ")[0].endswith(b"/claude")]
        os.kill(cli, signal.SIGKILL)  # as the OOM killer would
        killed.set()
        thread.join(60)
    run = outcome["run"]
    assert isinstance(run, AgentRun) and run.structured == {"answer": "42"}
    assert len({r.session_id for r in model.requests}) == 1  # resumed, not started again


def test_timeout_kills_the_cli(tmp_path: Path, monkeypatch) -> None:
    slow = Scenario(planner=[[structured({"answer": "late"})]], latency_s=30)
    with ScriptedModel(slow) as model, pytest.raises(AgentError) as info:
        run(model, monkeypatch, spec(tmp_path, timeout_s=2))
    assert info.value.subtype == "timeout"
    assert processes_under(tmp_path) == []


def test_a_wait_tool_answers_in_steps_and_a_stop_ends_the_session_before_the_next_request(
    tmp_path: Path, monkeypatch
) -> None:
    import orchestrator.adapters.agent as agent

    monkeypatch.setattr(agent, "WAIT_STEP_S", 0.5)
    told: list[str] = []
    first_call: list[float] = []

    async def outcome() -> str:  # the work beside the session ends 1.6 s after the first call
        first_call.append(first_call[0] if first_call else time.monotonic())
        await anyio.sleep(max(0.0, first_call[0] + 1.6 - time.monotonic()))
        return "all done"

    def again_until_done(view: RequestView):
        told.extend(view.results)
        if view.results and "all done" in view.results[-1]:
            return [structured({"answer": "saw it"})]
        return [tool(CHECKS_TOOL)]

    with ScriptedModel(Scenario(judge=[again_until_done] * 10)) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        result = anyio.run(run_agent, spec(tmp_path, role=Role.judge,
                                           wait_tool=WaitTool("checks", "Wait for the checks.", outcome)), "go")
        # Each call answered "still running" after half a second, until the work ended.
        assert result.structured == {"answer": "saw it"} and CHECKS_TOOL in model.requests[0].tools
        assert told[-1] == "all done" and len(told) >= 3 and all("Still running" in t for t in told[:-1])

        # A stop asked after a tool call ends the session there: no request follows; it reports its cost.
        asked = len(model.requests)
        stopping = spec(tmp_path, role=Role.judge, wait_tool=WaitTool("checks", "Wait.", _at_once),
                        stop=lambda: "the checks failed", session_id=session_uuid("test", tmp_path.name, "stop"))
        with pytest.raises(AgentError) as caught:
            anyio.run(run_agent, stopping, "go")
        assert len(model.requests) == asked + 1
        assert caught.value.cost_usd == pytest.approx(model.cost_usd() / len(model.requests), abs=1e-9)


async def _at_once() -> str:
    return "failed"
