"""What a session's Claude Code transcript says about how it ended.

The CLI appends every message of a session to ``projects/<cwd>/<session>.jsonl``
in its config folder as the message arrives. A run killed after the model gave
its final answer, but before the orchestrator recorded it, left that answer
there: reading it back costs nothing, where resuming the session would ask the
model again (and, for a review, ask it to answer a question it already answered).

Only the structured answer is read (the ``StructuredOutput`` tool call the CLI
asks the model for under ``--json-schema``); anything unexpected in the file
means "not finished", and the session is resumed as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINAL_TOOL = "StructuredOutput"


@dataclass(frozen=True)
class FinishedAnswer:
    """The final answer a transcript holds, and what the session cost up to it."""

    structured: dict[str, Any]
    cost_usd: float
    """The CLI's last ``cost-state`` total; 0 when it wrote none (killed right after the answer)."""
    num_turns: int


def transcript_path(config_dir: Path, session_id: str) -> Path | None:
    """The session's transcript under the CLI's config folder, if it has one."""
    return next((config_dir / "projects").glob(f"*/{session_id}.jsonl"), None)


def finished_answer(path: Path) -> FinishedAnswer | None:
    """The final structured answer if the session's last model message gave it, else None."""
    answer: dict[str, Any] | None = None
    cost, turns = 0.0, set[Any]()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill: the last one at most
            continue
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind == "cost-state":
            cost = float(entry.get("totalCostUSD") or 0.0)
        elif kind == "assistant":
            message = entry.get("message") or {}
            turns.add(message.get("id") or len(turns))
            answer = _final_call(message.get("content"))
        elif kind == "user" and not _tool_results(entry.get("message") or {}):
            answer = None  # a new prompt after the answer: the session went on
    if answer is None:
        return None
    return FinishedAnswer(structured=answer, cost_usd=round(cost, 6), num_turns=len(turns))


def _final_call(content: Any) -> dict[str, Any] | None:
    """The input of a final-answer tool call among a message's blocks."""
    if not isinstance(content, list):
        return None
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("name") == FINAL_TOOL:
            value = block.get("input")
            return value if isinstance(value, dict) else None
    return None


def _tool_results(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
