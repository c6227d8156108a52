"""The agent runtime: every Claude Code session of every role goes through here.

With :mod:`.session_watch`, the only module that imports ``claude_agent_sdk``.
It fixes what a role may do (its exact tool list), where (``cwd``), for how
much (budget, turn cap, a timeout that kills the CLI), and turns the SDK's
outcomes into an :class:`AgentRun` or one :class:`AgentError` that says
whether a retry could help.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    aclosing,
    nullcontext,
    suppress,
)
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

import anyio
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKError,
    HookMatcher,
    ProcessError,
    ResultError,
    ResultMessage,
    create_sdk_mcp_server,
    query,
    tool,
)
from pydantic import BaseModel, ValidationError

from orchestrator.adapters.fences import KEEP_ENV, Fence, kept_names
from orchestrator.adapters.fences import settings as fence_settings
from orchestrator.adapters.leash import (
    CLI_ENV,
    PROJECT_ENV,
    SESSION_ENV,
    leash_path,
    real_cli,
    reap,
)
from orchestrator.adapters.retry import Again, RetryPolicy, acall
from orchestrator.adapters.secrets import redact, redact_all
from orchestrator.adapters.session_watch import Silence, limit_resets_at
from orchestrator.adapters.timing import mark, span
from orchestrator.adapters.transcript import finished_answer, transcript_path
from orchestrator.domain.errors import AgentError
from orchestrator.domain.models import AgentRun, Role

READ_ONLY_TOOLS = ("Read", "Grep", "Glob")
EDIT_TOOLS = ("Read", "Edit", "Write", "Bash", "Grep", "Glob")

# Planner and judge can look but never write or run anything.
ROLE_TOOLS: dict[Role, tuple[str, ...]] = {
    Role.planner: READ_ONLY_TOOLS,
    Role.judge: READ_ONLY_TOOLS,
    Role.worker: EDIT_TOOLS,
    Role.resolver: EDIT_TOOLS,
}

# Tools that act on the machine. They are never pre-approved: acceptEdits
# approves edits inside the session's cwd only, and Bash runs only inside
# Claude Code's sandbox (bubblewrap on Linux), whose writes are confined to the
# cwd. An edit or a command outside is refused, as nothing may ask the user.
# What the tools may read, and their environment, are fenced (see fences.py).
CONFINED_TOOLS = frozenset({"Write", "Edit", "Bash"})

# HTTP statuses worth another try: rate limits, server errors, overload.
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

_SESSION_NAMESPACE = uuid.UUID("5b0c2a40-7f3e-4d6a-9d1c-0c4e0a7d2e11")


def session_uuid(*parts: object) -> str:
    """A deterministic session id, so a crashed run can be found and resumed."""
    return str(uuid.uuid5(_SESSION_NAMESPACE, "/".join(str(p) for p in parts)))


class SpendGuard(Protocol):
    """Holds a session's cap against the project's spend caps while it runs (see :mod:`orchestrator.stages.budget`)."""

    def session(self, session_id: str, cap_usd: float) -> AbstractContextManager[Callable[[float], None]]:
        """Raises BudgetReached if the session may not start; yields a setter for its final cost."""
        ...


class SlotWatch(Protocol):
    """Told while a session waits for a slot of the portfolio's agent cap (see :mod:`orchestrator.stages.capacity`)."""

    def waiting(self) -> AbstractContextManager[object]:
        """Entered when the cap is full and the session has to wait; left once it has a slot."""
        ...


class RateLimitPark(Protocol):
    """Where a rate or usage limit parks the project's sessions (see :mod:`orchestrator.stages.rate_limit`)."""

    def until(self) -> float | None:
        """When the park ends (a Unix time), while one holds: no session may start before."""
        ...

    def park(self, ends_at: float, reason: str) -> None:
        """The model API refused for a limit that resets at ``ends_at``."""
        ...


WAIT_SERVER = "orch"
WAIT_STEP_S = 240.0
"""A wait tool answers "still running" after this long, and the agent calls it again: no call
outlives the CLI's own limits on a tool call, or our watch on a silent session."""


@dataclass(frozen=True)
class WaitTool:
    """A tool the agent calls to wait for work the orchestrator runs beside its session, and read its outcome."""

    name: str
    description: str
    outcome: Callable[[], Awaitable[str]]
    """Waits for the work to end; returns what the agent is told."""

    @property
    def qualified(self) -> str:
        """The name the CLI knows it by."""
        return f"mcp__{WAIT_SERVER}__{self.name}"


AgentSlots = Callable[[str, SlotWatch | None], AbstractAsyncContextManager[object]]
"""One slot of the named limit for the length of a session (the Prefect layer provides it)."""
SlotHolder = Callable[[SlotWatch | None], AbstractAsyncContextManager[object]]
"""One slot of the portfolio's limit for the length of a session."""


@dataclass
class AgentSpec:
    """Everything one agent session needs besides its prompt."""

    role: Role
    model: str
    system_prompt: str
    cwd: Path
    max_budget_usd: float
    timeout_s: float
    max_turns: int
    stall_s: float | None = None
    """Cut a session whose CLI sends nothing for this long (longer while a tool runs); it is retried
    as a transient fault, resuming the session. None: only ``timeout_s`` applies."""
    task_id: str | None = None
    """Named in the role line so logs (and the scripted model) can tell sessions apart."""
    output_model: type[BaseModel] | None = None
    """When set, the run must end with structured output valid for this model."""
    session_id: str | None = None
    resume: bool = False
    """Continue ``session_id`` instead of starting it (after a crash)."""
    config_dir: Path | None = None
    """CLAUDE_CONFIG_DIR for the CLI, unless the user set one: keeps transcripts together."""
    extra_env: dict[str, str] = field(default_factory=dict)
    slot: SlotHolder | None = None
    """Holds one slot of the portfolio's agent limit while the session runs (None = no limit)."""
    slot_watch: SlotWatch | None = None
    """Records the session's wait when that limit is full, for the live line and status."""
    api_retries: int = 0
    """How often a transient API failure is retried, resuming the session."""
    retry_base_s: float = 2.0
    """Backoff before the first retry; doubled for each next one."""
    spend: SpendGuard | None = None
    """The project's cycle and day caps; None = only ``max_budget_usd`` applies."""
    fence: Fence = field(default_factory=Fence)
    """The tools' environment and the paths the session may not read."""
    park: RateLimitPark | None = None
    """Rate-limit parking; None = the CLI sits out every limit itself."""
    owner: str = ""
    """The project's repository, marked on every process of the session: the patrol reaps them
    after a crash (see :func:`orchestrator.adapters.leash.reap`)."""
    replay: bool = True
    """A session whose transcript already ends with its final answer is not asked again: the
    answer is read back. False where the answer is worth nothing without the files it left."""
    wait_tool: WaitTool | None = None
    """A tool the session may call to wait for work running beside it (see :class:`WaitTool`)."""
    stop: Callable[[], str] | None = None
    """Asked after each of the session's tool calls: a reason ends the session there, before it
    asks the model again (it is paid for up to then, and ends without its answer)."""


def role_line(role: Role, task_id: str | None) -> str:
    """The first line of every system prompt: who this session is."""
    return f"[orchestrator] role={role.value}" + (f" task={task_id}" if task_id else "")


def effective_config_dir(config_dir: Path | None) -> Path:
    """Where the CLI keeps transcripts: the user's CLAUDE_CONFIG_DIR, else ``config_dir``, else ~/.claude."""
    user_dir = os.environ.get("CLAUDE_CONFIG_DIR")
    if user_dir:
        return Path(user_dir)
    return config_dir or Path.home() / ".claude"


def private(folder: Path) -> None:
    """Make a transcripts folder the user's alone: 0700 folders, 0600 files.

    The CLI writes with the process's umask; transcripts hold the code, the
    tools' output and the model's answers.
    """
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder):
        for name, mode in [(root, 0o700), *((os.path.join(root, d), 0o700) for d in dirs),
                           *((os.path.join(root, f), 0o600) for f in files)]:
            with suppress(OSError):  # a file the CLI removed meanwhile
                if not os.path.islink(name) and os.stat(name).st_mode & 0o777 != mode:
                    os.chmod(name, mode)


def session_exists(spec: AgentSpec) -> bool:
    """True when a session with this id was started before (a crash cut it off)."""
    if not spec.session_id:
        return False
    return transcript_path(effective_config_dir(spec.config_dir), spec.session_id) is not None


def build_options(spec: AgentSpec, stderr: deque[str], home: Path) -> ClaudeAgentOptions:
    """The SDK options for a spec; the CLI gets only the environment the fence allows."""
    tools = list(ROLE_TOOLS[spec.role])
    leash, cli = leash_path(), real_cli()
    if not (leash and cli):  # without the leash the CLI would get the whole environment
        raise AgentError(f"{role_line(spec.role, spec.task_id)}: orch-leash is missing next to "
                         f"{sys.executable}: reinstall the package (pip install -e .)", subtype="setup")
    fence = replace(spec.fence, allow_write=(*spec.fence.allow_write, home))
    env = dict(spec.extra_env)
    env.update({CLI_ENV: cli, KEEP_ENV: ",".join(kept_names(fence, os.environ)), "HOME": str(home)})
    if spec.session_id:
        env[SESSION_ENV] = spec.session_id
    if spec.owner:
        env[PROJECT_ENV] = spec.owner
    if spec.config_dir and "CLAUDE_CONFIG_DIR" not in os.environ:
        env["CLAUDE_CONFIG_DIR"] = str(spec.config_dir)
    options = ClaudeAgentOptions(
        tools=tools,
        allowed_tools=[t for t in tools if t not in CONFINED_TOOLS],
        # acceptEdits with an explicit tool list works as root; bypassPermissions does not.
        permission_mode="acceptEdits",
        system_prompt=f"{role_line(spec.role, spec.task_id)}\n\n{spec.system_prompt}",
        cwd=str(spec.cwd),
        model=spec.model,
        max_turns=spec.max_turns,
        max_budget_usd=spec.max_budget_usd,
        setting_sources=[],  # a project's own .claude/ settings (and hooks) stay out
        # The sandbox goes in here, not in ``sandbox=``: the SDK would replace ours with it.
        settings=json.dumps(fence_settings(fence, {**os.environ, **env}, sandboxed_bash="Bash" in tools)),
        env=env,
        stderr=stderr.append,
        cli_path=leash,
    )
    if spec.wait_tool is not None:
        options.mcp_servers = {WAIT_SERVER: _wait_server(spec.wait_tool)}
        options.allowed_tools = [*options.allowed_tools, spec.wait_tool.qualified]
    if spec.stop is not None:
        options.hooks = {"PostToolUse": [HookMatcher(hooks=[_stop_hook(spec.stop)])]}
    if spec.output_model is not None:
        schema = spec.output_model.model_json_schema()
        options.output_format = {"type": "json_schema", "schema": schema}
    if spec.session_id:
        if spec.resume:
            options.resume = spec.session_id
        else:
            options.session_id = spec.session_id
    return options


def _wait_server(wait: WaitTool) -> Any:
    """An in-process MCP server with the one tool; it answers in steps of at most ``WAIT_STEP_S``."""

    @tool(wait.name, wait.description, {})
    async def call(_: dict[str, Any]) -> dict[str, Any]:
        with anyio.move_on_after(WAIT_STEP_S):
            return {"content": [{"type": "text", "text": await wait.outcome()}]}
        return {"content": [{"type": "text", "text": "Still running: call this tool again to wait on."}]}

    return create_sdk_mcp_server(WAIT_SERVER, tools=[call])


def _stop_hook(stop: Callable[[], str]) -> Any:
    async def after_tool(_input: Any, _tool_use_id: str | None, _context: Any) -> dict[str, Any]:
        reason = stop()
        return {"continue_": False, "stopReason": reason} if reason else {}

    return after_tool


async def run_agent(spec: AgentSpec, prompt: str) -> AgentRun:
    """Run one agent session to its end and return what it produced.

    Raises AgentError on any failure; ``transient`` is True only for API
    failures that another try may get past.
    """
    # A session a killed run left finished is read back before any slot, park or budget check: it costs nothing.
    if spec.replay and (answered := await anyio.to_thread.run_sync(_answered_before, spec)) is not None:
        return answered
    parked = spec.park.until() if spec.park else None
    if parked is not None:
        raise _parked(spec, parked, "not started")
    # Waiting for a slot is not part of the session's timeout.
    slot = spec.slot(spec.slot_watch) if spec.slot is not None else nullcontext()
    asked = time.monotonic()
    async with slot:
        mark("slot", spec.session_id or "", asked, time.monotonic())
        # Checked once the slot is ours: sessions that ended meanwhile have their costs in.
        held = spec.spend.session(spec.session_id or "", spec.max_budget_usd) if spec.spend else None
        with held or nullcontext(lambda cost: None) as settle:
            try:
                run = await _run_with_retries(spec, prompt)
            except AgentError as exc:
                settle(exc.cost_usd)
                raise
            settle(run.cost_usd)
            return run


async def _run_with_retries(spec: AgentSpec, prompt: str) -> AgentRun:
    """Retry transient API failures with exponential backoff, resuming the session.

    A resumed session's CLI restores the session's cost from its transcript,
    so its totals (and its budget check) already include the earlier tries;
    a try that starts afresh is added to them and gets only what is left.
    """
    spent = 0.0

    async def attempt() -> AgentRun:
        nonlocal spent
        # The same session id cannot be started twice: continue the one cut off before.
        resumed = spec.resume or session_exists(spec)
        if resumed and spec.replay:  # a try killed after the final answer: that answer stands
            answered = await anyio.to_thread.run_sync(_answered_before, spec)
            if answered is not None:
                return answered.model_copy(update={"cost_usd": _total(spent, answered.cost_usd, True)})
        budget = spec.max_budget_usd if resumed else round(spec.max_budget_usd - spent, 6)
        try:
            with span("agent", spec.role.value, session_id=spec.session_id, task_id=spec.task_id or ""):
                run = await _run_session(replace(spec, max_budget_usd=budget, resume=resumed), prompt)
        except AgentError as exc:
            spent = _total(spent, exc.cost_usd, resumed)
            exc.cost_usd = spent
            raise
        return run.model_copy(update={"cost_usd": _total(spent, run.cost_usd, resumed)})

    def transient(outcome: AgentRun | Exception) -> Again | None:
        # A try that used up the budget gets no next one: it would start with nothing left.
        # A parked session is not retried now: it resumes once the limit resets.
        if isinstance(outcome, AgentError) and outcome.transient and outcome.subtype != "rate_limited" \
                and spent < spec.max_budget_usd:
            return Again()
        return None

    policy = RetryPolicy(attempts=spec.api_retries + 1, base_s=spec.retry_base_s, factor=2.0)
    return await acall(attempt, policy, transient)


def _total(spent: float, reported: float, resumed: bool) -> float:
    # A resumed try reports the session's running total; a fresh one only its own.
    return round(max(spent, reported) if resumed else spent + reported, 6)


async def _run_session(spec: AgentSpec, prompt: str) -> AgentRun:
    stderr: deque[str] = deque(maxlen=20)
    with tempfile.TemporaryDirectory(prefix="orch-home-") as home:  # the tools' own HOME
        try:
            return await _run_cli(spec, prompt, build_options(spec, stderr, Path(home)), stderr)
        finally:
            with anyio.CancelScope(shield=True):  # off the event loop, even when cancelled
                await anyio.to_thread.run_sync(_after_session, spec)


def _after_session(spec: AgentSpec) -> None:
    private(effective_config_dir(spec.config_dir))
    if spec.session_id:
        reap(SESSION_ENV, spec.session_id)


async def _run_cli(spec: AgentSpec, prompt: str, options: ClaudeAgentOptions, stderr: deque[str]) -> AgentRun:
    started = time.monotonic()
    result: ResultMessage | None = None
    who = _who(spec)
    silence = Silence(spec.stall_s)
    try:
        # Cancelling a scope closes the SDK's generator, which ends the CLI process.
        with anyio.fail_after(spec.timeout_s), anyio.CancelScope(deadline=silence.deadline()) as quiet:
            # Closed on the way out, so a session cut by a raise ends its CLI as a cancelled one does.
            async with aclosing(cast(AsyncGenerator[Any, None], query(prompt=prompt, options=options))) as messages:
                async for message in messages:
                    silence.heard(message)
                    quiet.deadline = silence.deadline()
                    if isinstance(message, ResultMessage):
                        result = message
                    elif spec.park and (ends_at := limit_resets_at(message)):
                        spec.park.park(ends_at, f"the model API's rate limit ({who})")
                        raise _parked(spec, ends_at, "cut to resume")
        if quiet.cancelled_caught:
            raise AgentError(
                f"{who}: Claude Code sent nothing for {silence.limit_s():g}s; cut to be resumed",
                subtype="stall",
                transient=True,
                cost_usd=_cost(result),
                session_id=spec.session_id,
            )
    except TimeoutError as exc:
        raise AgentError(
            f"{who}: timed out after {spec.timeout_s:g}s; raise the timeout or make the task smaller",
            subtype="timeout",
            cost_usd=_cost(result),
            session_id=spec.session_id,
        ) from exc
    except ResultError as exc:
        raise _from_result_error(who, exc, result) from exc
    except ProcessError as exc:
        detail = redact(" | ".join(stderr) or str(exc).splitlines()[0])
        # Killed by a signal from outside (the OOM killer, a user): not the agent's failure, so
        # resumed as an API fault is. Our own stops (timeout, stall, Ctrl+C) do not come here.
        killed = exc.exit_code is not None and (exc.exit_code < 0 or exc.exit_code > 128)
        raise AgentError(
            f"{who}: Claude Code exited with code {exc.exit_code}: {detail}",
            subtype="killed" if killed else "process",
            transient=killed,
            cost_usd=_cost(result),
            session_id=spec.session_id,
        ) from exc
    except ClaudeSDKError as exc:
        raise AgentError(
            f"{who}: {exc}", subtype="sdk", transient=True, session_id=spec.session_id
        ) from exc
    if result is None:
        raise AgentError(f"{who}: Claude Code ended without a result", subtype="process")
    return _finish(spec, who, result, time.monotonic() - started)


def _answered_before(spec: AgentSpec) -> AgentRun | None:
    """The answer a killed run's session gave before anyone recorded it, read from its transcript."""
    if not (spec.session_id and spec.output_model):
        return None
    path = transcript_path(effective_config_dir(spec.config_dir), spec.session_id)
    found = finished_answer(path) if path is not None else None
    if found is None:
        return None
    who = _who(spec)
    structured = _validated(spec, who, redact_all(found.structured), found.cost_usd, spec.session_id)
    return AgentRun(text="", structured=structured, cost_usd=found.cost_usd, num_turns=found.num_turns,
                    duration_s=0.0, session_id=spec.session_id)


def _who(spec: AgentSpec) -> str:
    """The session in error messages: ``role=worker task=...``."""
    return role_line(spec.role, spec.task_id).removeprefix("[orchestrator] ")


def _parked(spec: AgentSpec, ends_at: float, what: str) -> AgentError:
    when = time.strftime("%H:%M", time.gmtime(ends_at))
    return AgentError(
        f"{_who(spec)}: rate-limited until {when} (UTC); {what}",
        subtype="rate_limited", transient=True, session_id=spec.session_id,
    )


def _cost(result: ResultMessage | None) -> float:
    return float(result.total_cost_usd or 0.0) if result else 0.0


def _from_result_error(who: str, exc: ResultError, result: ResultMessage | None) -> AgentError:
    status = exc.api_error_status
    transient = status in TRANSIENT_STATUSES or (
        exc.terminal_reason == "api_error" and status is None
    )
    reason = exc.subtype or "error"
    if status is not None:
        reason = f"API error {status}"
    detail = redact("; ".join(exc.errors) or (exc.result or "").strip()[:200])
    return AgentError(
        f"{who}: {reason}" + (f": {detail}" if detail else ""),
        subtype=exc.subtype or "error",
        transient=transient,
        cost_usd=_cost(result),
        session_id=exc.session_id,
    )


def _finish(spec: AgentSpec, who: str, result: ResultMessage, elapsed_s: float) -> AgentRun:
    cost = _cost(result)
    if result.is_error:
        raise AgentError(
            f"{who}: run ended in error ({result.subtype})",
            subtype=result.subtype,
            cost_usd=cost,
            session_id=result.session_id,
        )
    structured = _validated(spec, who, redact_all(result.structured_output), cost, result.session_id)
    return AgentRun(
        text=redact(result.result or ""),
        structured=structured,
        cost_usd=cost,
        num_turns=result.num_turns,
        duration_s=round(elapsed_s, 3),
        session_id=result.session_id,
    )


def _validated(spec: AgentSpec, who: str, structured: Any, cost: float, session_id: str | None) -> Any:
    """The structured output checked against the spec's model (as given when it has none)."""
    if spec.output_model is None:
        return structured
    if structured is None:
        raise AgentError(f"{who}: the agent gave no structured output", subtype="no_structured_output",
                         cost_usd=cost, session_id=session_id)
    try:
        return spec.output_model.model_validate(structured).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "output"
        raise AgentError(f"{who}: structured output is invalid at {where}: {first['msg']}",
                         subtype="invalid_output", cost_usd=cost, session_id=session_id) from exc
