"""A scripted Anthropic Messages API on loopback: the model's only stand-in.

The real claude-agent-sdk and the real Claude Code CLI talk to this server
instead of Anthropic's API, so tests and the demo exercise real tools in real
worktrees while what the "model" says is fixed by a :class:`Scenario`.

A scenario gives each agent role a script: a list of turns, each turn the
content blocks of one model response (tool calls such as :func:`write` or
:func:`bash`, :func:`text`, or the final :func:`structured` output). Which
script answers a request is found from the role line the agent runtime puts
in every system prompt (``[orchestrator] role=worker task=...``) and, for
workers, from the task text in the first user message. The turn is the
number of model answers already in the conversation, so the server keeps no
per-session state and a resumed session continues where it left off.

    scenario = Scenario(
        planner=[[structured(plan)]],
        workers={"Add greeting": [[write("greet.py", "...")], [structured(report)]]},
    )
    with ScriptedModel(scenario) as model:
        run_cycle(env=model.env())
        assert len(model.requests) == 4
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from orchestrator.demo.loopback import LoopbackServer, QuietHandler

Block = dict[str, Any]

# USD per million (input, output) tokens for the models the bundled CLI's
# aliases resolve to, as that CLI prices them (measured, and checked against
# its total_cost_usd by the tests). Cost is deterministic because this server
# decides the usage. These hold for responses under 100,000 input tokens
# (the CLI prices some models' very long prompts higher).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-5-5": (4.0, 20.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-haiku-5-5": (0.1, 0.5),
    "claude-haiku-4-5": (1.0, 5.0),
}

# What the CLI puts in for a prompt a crash left unanswered when it resumes the session:
# not one of the model's turns, so the resumed session is answered where it was cut off.
UNANSWERED = "No response requested."
_ROLE_LINE = re.compile(r"\[orchestrator\] role=(\w+)(?: task=(\S+))?")
_CWD_LINE = re.compile(r"Primary working directory: (.+)")
_PATH_TOOLS = {"Read", "Write", "Edit"}


# -- building blocks of a script -------------------------------------------


def text(content: str) -> Block:
    """A plain text block."""
    return {"type": "text", "text": content}


def tool(name: str, **tool_input: Any) -> Block:
    """A call of any tool the CLI offers."""
    return {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": name, "input": tool_input}


def read(path: str) -> Block:
    """Read a file; a relative path is taken from the agent's working directory."""
    return tool("Read", file_path=path)


def write(path: str, content: str) -> Block:
    """Write a whole file; a relative path is taken from the agent's working directory."""
    return tool("Write", file_path=path, content=content)


def edit(path: str, old: str, new: str) -> Block:
    """Replace one exact string in a file (the file must have been read first)."""
    return tool("Edit", file_path=path, old_string=old, new_string=new)


def bash(command: str) -> Block:
    """Run a shell command in the agent's working directory."""
    return tool("Bash", command=command, description="scripted command")


def structured(output: dict[str, Any]) -> Block:
    """The final structured output; ends the agent's run."""
    return tool("StructuredOutput", **output)


@dataclass(frozen=True)
class Usage:
    """Token usage reported for a response; drives the CLI's cost figure."""

    input_tokens: int = 1000
    output_tokens: int = 100


@dataclass(frozen=True)
class Fail:
    """Answer a turn with an HTTP error instead of a response."""

    status: int = 529
    message: str = "Overloaded"
    error_type: str = "api_error"
    headers: tuple[tuple[str, str], ...] = ()
    """Sent with the error, such as a 429's ``retry-after`` and rate-limit reset headers."""


@dataclass(frozen=True)
class RequestView:
    """What a dynamic turn sees of the request it answers."""

    role: str
    task: str | None
    turn: int
    cwd: Path | None
    prompt: str
    results: list[str]  # the tool results that came back since the last response
    tools: tuple[str, ...] = ()  # the tools the session offers the model


Turn = list[Block] | Callable[[RequestView], list[Block] | Fail] | Fail
Script = list[Turn]


CHECKS_TOOL = "mcp__orch__checks"
"""The tool a reviewer waits for its branch's tests and lint with, when it reviews while they run."""


def checks_then(final: list[Block]) -> Callable[[RequestView], list[Block]]:
    """A reviewer's turn: wait for the branch's checks if the session offers that, else ``final``."""
    def turn(view: RequestView) -> list[Block]:
        return [tool(CHECKS_TOOL)] if CHECKS_TOOL in view.tools else final
    return turn


APPROVE = structured({"approve": True, "reasons": ["scripted approval"], "summary": "Looks fine."})


def approve_all(view: RequestView) -> list[Block]:
    """Default judge: wait for the checks when offered (the first turn), then approve, saying it was scripted to."""
    return checks_then([APPROVE])(view) if view.turn == 0 else [APPROVE]


@dataclass
class Scenario:
    """What every role answers, turn by turn."""

    planner: Script = field(default_factory=list)
    workers: dict[str, Script] = field(default_factory=dict)  # key: text found in the task prompt
    judge: Script = field(default_factory=lambda: [approve_all, approve_all])
    resolver: Script = field(default_factory=list)
    latency_s: float = 0.0
    usage: Usage = field(default_factory=Usage)

    def script_for(self, role: str, prompt: str) -> tuple[Script, str | None]:
        """The script for a request, and the worker key that chose it."""
        if role == "worker":
            # Longest key first so "Fix parser" beats "parser".
            for key in sorted(self.workers, key=len, reverse=True):
                if key in prompt:
                    return self.workers[key], key
            return [], None
        return getattr(self, role, []) if role in ("planner", "judge", "resolver") else [], None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered, for assertions and benchmarks."""

    role: str
    task: str | None
    key: str | None
    session_id: str
    turn: int
    model: str
    started: float
    finished: float
    status: int
    usage: Usage
    tools: tuple[str, ...]
    prompt: str  # the first user message: the task as the agent was given it
    final: bool = False  # the answer was the session's structured output, which ends it
    cwd: Path | None = None  # where the session runs (a worktree: <project>/.orch/worktrees/<name>)


class ScriptedModel(LoopbackServer):
    """The scripted server, running in a background thread while in use."""

    def __init__(self, scenario: Scenario, host: str = "127.0.0.1", port: int = 0) -> None:
        self.scenario = scenario
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._listen(_handler_for(self), host, port)

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every answered message request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def env(self) -> dict[str, str]:
        """Environment that points the Claude Code CLI at this server."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "scripted-model-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            # Fail fast: a scripted model that errors should not be retried for minutes.
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "API_TIMEOUT_MS": "60000",
        }

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def max_in_flight(self) -> int:
        """The most requests that were being answered at the same moment."""
        return peak_overlap((r.started, r.finished) for r in self.requests)

    def cost_usd(self, role: str | None = None) -> float:
        """What the CLI should charge for the recorded responses (optionally one role)."""
        total = 0.0
        for r in self.requests:
            if r.status == 200 and (role is None or r.role == role):
                price_in, price_out = price_of(r.model)
                total += (r.usage.input_tokens * price_in + r.usage.output_tokens * price_out) / 1e6
        return total


def peak_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most (start, end) intervals that hold at the same moment (an end comes before a start)."""
    edges = sorted(e for a, b in intervals for e in ((a, 1), (b, -1)))
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return peak


def most_sessions_at_once(requests: Iterable[RecordedRequest]) -> int:
    """Agent sessions alive at the same moment, each from its first request to its last answer."""
    spans: dict[str, tuple[float, float]] = {}
    for r in requests:
        start, end = spans.get(r.session_id, (r.started, r.finished))
        spans[r.session_id] = (min(start, r.started), max(end, r.finished))
    return peak_overlap(spans.values())


def price_of(model: str) -> tuple[float, float]:
    """Per-million-token prices for a model id such as ``claude-sonnet-5-5``."""
    for model_id, prices in PRICES_PER_MTOK.items():
        if model.startswith(model_id):
            return prices
    raise KeyError(f"no scripted price for model {model!r}")


# -- request handling --------------------------------------------------------


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return str(system)


def _texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
        return
    for block in content or []:
        if block.get("type") == "text":
            yield block.get("text", "")
        elif block.get("type") == "tool_result":
            yield from _texts(block.get("content"))


def _view(body: dict[str, Any]) -> RequestView:
    messages = body.get("messages", [])
    system = _system_text(body)
    everything = system + "\n" + "\n".join(t for m in messages for t in _texts(m.get("content")))
    role_match = _ROLE_LINE.search(everything)
    cwd_match = _CWD_LINE.search(everything)
    first_user = next((m for m in messages if m.get("role") == "user"), {"content": ""})
    assistant_at = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    answered = [i for i in assistant_at if list(_texts(messages[i].get("content"))) != [UNANSWERED]]
    # What just came back: everything after the last assistant message (the CLI
    # also appends role "system" notes, so the last message is not the result).
    after = messages[assistant_at[-1] + 1 :] if assistant_at else []
    results = [t for m in after for b in m.get("content") or [] if isinstance(b, dict) and b.get("type") == "tool_result" for t in _texts(b.get("content"))]
    return RequestView(
        role=role_match.group(1) if role_match else "unknown",
        task=role_match.group(2) if role_match else None,
        turn=len(answered),
        cwd=Path(cwd_match.group(1).strip()) if cwd_match else None,
        prompt="\n".join(_texts(first_user.get("content"))),
        results=results,
        tools=tuple(t.get("name", "") for t in body.get("tools", [])),
    )


def _absolute_paths(blocks: list[Block], cwd: Path | None) -> list[Block]:
    """Give each tool call a fresh id and make file paths absolute in the agent's cwd."""
    fixed = []
    for block in blocks:
        block = json.loads(json.dumps(block))
        if block.get("type") == "tool_use":
            block["id"] = "toolu_" + uuid.uuid4().hex[:24]
            path = block["input"].get("file_path")
            if block["name"] in _PATH_TOOLS and path and cwd and not Path(path).is_absolute():
                block["input"]["file_path"] = str(cwd / path)
        fixed.append(block)
    return fixed


def _answer(scenario: Scenario, view: RequestView) -> tuple[list[Block] | Fail, str | None]:
    script, key = scenario.script_for(view.role, view.prompt)
    if view.turn >= len(script):
        return [text("(the scripted model has nothing more to say)")], key
    turn = script[view.turn]
    if isinstance(turn, Fail):
        return turn, key
    blocks = turn(view) if callable(turn) else turn
    if isinstance(blocks, Fail):  # a dynamic turn may fail some requests and answer others
        return blocks, key
    return _absolute_paths(blocks, view.cwd), key


def _handler_for(model: ScriptedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self._json(200, {"ok": True})

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if "count_tokens" in self.path:
                self._json(200, {"input_tokens": model.scenario.usage.input_tokens})
                return
            started = time.monotonic()
            view = _view(body)
            answer, key = _answer(model.scenario, view)
            usage = model.scenario.usage
            time.sleep(model.scenario.latency_s)
            status = answer.status if isinstance(answer, Fail) else 200
            model._record(
                RecordedRequest(
                    role=view.role,
                    task=view.task,
                    key=key,
                    session_id=self.headers.get("X-Claude-Code-Session-Id", ""),
                    turn=view.turn,
                    model=str(body.get("model", "")),
                    started=started,
                    finished=time.monotonic(),
                    status=status,
                    usage=usage,
                    tools=tuple(t.get("name", "") for t in body.get("tools", [])),
                    prompt=view.prompt,
                    final=not isinstance(answer, Fail) and any(b.get("name") == "StructuredOutput" for b in answer),
                    cwd=view.cwd,
                )
            )
            try:
                if isinstance(answer, Fail):
                    error = {"type": "error", "error": {"type": answer.error_type, "message": answer.message}}
                    self._json(answer.status, error, answer.headers)
                elif body.get("stream"):
                    self._stream(body, answer, usage)
                else:
                    self._json(200, _message(body, answer, usage))
            except (BrokenPipeError, ConnectionResetError):  # the CLI was stopped while it waited
                self.close_connection = True

        def _json(self, status: int, payload: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict[str, Any], blocks: list[Block], usage: Usage) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            for event in _events(body, blocks, usage):
                self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

    return Handler


def _message(body: dict[str, Any], blocks: list[Block], usage: Usage) -> dict[str, Any]:
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {
        # A unique id per response: reused ids make the CLI merge turns.
        "id": "msg_" + uuid.uuid4().hex,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "scripted"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    }


def _events(body: dict[str, Any], blocks: list[Block], usage: Usage) -> Iterator[dict[str, Any]]:
    message = _message(body, blocks, usage)
    start = dict(message, content=[], stop_reason=None)
    start["usage"] = {"input_tokens": usage.input_tokens, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            empty = dict(block, input={})
            yield {"type": "content_block_start", "index": index, "content_block": empty}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage.output_tokens},
    }
    yield {"type": "message_stop"}
