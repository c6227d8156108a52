"""Reading a session's final answer back from its Claude Code transcript."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.adapters.transcript import finished_answer, transcript_path

PROMPT = {"type": "user", "message": {"role": "user", "content": "# Task 1\n\nAdd shout"}}
COST = {"type": "cost-state", "totalCostUSD": 0.012}


def assistant(message_id: str, *blocks: dict) -> dict:
    return {"type": "assistant", "message": {"id": message_id, "role": "assistant", "content": list(blocks)}}


def tool_result(tool_id: str, text: str) -> dict:
    return {"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_id, "content": text}]}}


READ = assistant("m1", {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a.py"}})
ANSWER = assistant("m2", {"type": "tool_use", "id": "t2", "name": "StructuredOutput",
                          "input": {"approve": True, "reasons": []}})


def transcript(tmp_path: Path, *entries: dict, tail: str = "") -> Path:
    path = tmp_path / "projects" / "-work-calc" / "s1.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + tail)
    return path


def test_a_session_whose_last_answer_is_its_output_is_finished(tmp_path: Path) -> None:
    path = transcript(tmp_path, PROMPT, READ, tool_result("t1", "x = 1"), ANSWER,
                      tool_result("t2", "Structured output provided successfully"), COST)
    assert transcript_path(tmp_path, "s1") == path
    found = finished_answer(path)
    assert found is not None
    assert found.structured == {"approve": True, "reasons": []}
    assert found.cost_usd == 0.012 and found.num_turns == 2


def test_killed_before_the_cost_was_written_the_answer_still_counts(tmp_path: Path) -> None:
    found = finished_answer(transcript(tmp_path, PROMPT, ANSWER, tail='{"type": "user", "mess'))
    assert found is not None and found.structured["approve"] is True and found.cost_usd == 0.0


def test_a_session_cut_before_its_answer_is_not_finished(tmp_path: Path) -> None:
    assert finished_answer(transcript(tmp_path, PROMPT, READ, tool_result("t1", "x = 1"), COST)) is None
    assert finished_answer(transcript(tmp_path, PROMPT)) is None


def test_a_session_prompted_again_after_its_answer_is_not_finished(tmp_path: Path) -> None:
    path = transcript(tmp_path, PROMPT, ANSWER, tool_result("t2", "ok"), PROMPT)
    assert finished_answer(path) is None


def test_no_transcript_and_an_unreadable_one(tmp_path: Path) -> None:
    assert transcript_path(tmp_path, "s1") is None
    assert finished_answer(tmp_path / "missing.jsonl") is None
    assert finished_answer(transcript(tmp_path, tail="not json\n[1, 2]\n")) is None
