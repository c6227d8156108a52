"""The offline demo: a sample project, a scripted model, one real cycle.

Everything is real except the model: a git repository with its own tests,
the Claude Code CLI running real tools in real worktrees, Prefect running
the flow, SQLite keeping the state. The scripted planner proposes three
tasks; one worker breaks the tests, so the judge rejects its branch, and the
other two are merged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.adapters.git_commands import init_repo
from orchestrator.demo.scripted import Scenario, bash, edit, read, structured, text, tool, write
from orchestrator.domain.errors import OrchestratorError
from orchestrator.domain.models import CycleStatus, CycleSummary

SAMPLE_FILES = {
    "calc.py": '"""A tiny calculator."""\n\n\ndef add(a, b):\n    """Return a plus b."""\n    return a + b\n',
    "test_calc.py": (
        "import unittest\n\nfrom calc import add\n\n\n"
        "class AddTest(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n\n"
        'if __name__ == "__main__":\n    unittest.main()\n'
    ),
    ".gitignore": "__pycache__/\n",
    "CLAUDE.md": (
        "# calc\n\nA tiny calculator library. Tests: `python -m unittest`.\n\n"
        "## Backlog\n\n- A `shout(text)` helper in `strings.py` that upper-cases and adds `!`.\n"
        "- A `mean(values)` function in `stats.py`.\n- Make `add` faster.\n"
    ),
}

STRINGS_PY = 'def shout(text):\n    """Upper-case text and add an exclamation mark."""\n    return text.upper() + "!"\n'
TEST_STRINGS_PY = (
    "import unittest\n\nfrom strings import shout\n\n\n"
    "class ShoutTest(unittest.TestCase):\n"
    '    def test_shout(self):\n        self.assertEqual(shout("hi"), "HI!")\n'
)
STATS_PY = 'def mean(values):\n    """Arithmetic mean of a non-empty sequence."""\n    return sum(values) / len(values)\n'
TEST_STATS_PY = (
    "import unittest\n\nfrom stats import mean\n\n\n"
    "class MeanTest(unittest.TestCase):\n"
    "    def test_mean(self):\n        self.assertEqual(mean([1, 2, 3]), 2)\n"
)

PLAN = {
    "findings": "calc has one function, add, with one test. The backlog asks for two helpers and a faster add.",
    "proposal": "Add shout() and mean() in their own modules, each with a test, and try a faster add.",
    "deferred": ["Packaging the library."],
    "risks": ["A faster add must not change its results."],
    "tasks": [
        {"title": "Add shout helper", "type": "code", "priority": 2,
         "description": "Create strings.py with shout(text) returning text.upper() + '!', and test_strings.py testing it."},
        {"title": "Add mean function", "type": "code", "priority": 2,
         "description": "Create stats.py with mean(values), the arithmetic mean, and test_stats.py testing it."},
        {"title": "Make add faster", "type": "code", "priority": 3,
         "description": "Speed up add(a, b) in calc.py without changing its results."},
    ],
}


def _report(summary: str) -> list[dict]:
    return [structured({"summary": summary, "completed": True})]


def demo_scenario(latency_s: float = 0.0) -> Scenario:
    """The demo's script: what the planner, each worker and the judge say."""
    tests = f"{sys.executable} -m unittest -q"
    return Scenario(
        planner=[
            [text("Let me look at the code."), tool("Glob", pattern="*.py")],
            [read("CLAUDE.md")],
            [structured(PLAN)],
        ],
        workers={
            "Add shout helper": [
                [write("strings.py", STRINGS_PY), write("test_strings.py", TEST_STRINGS_PY)],
                [bash(tests)],
                _report("Added strings.shout with a test."),
            ],
            "Add mean function": [
                [write("stats.py", STATS_PY), write("test_stats.py", TEST_STATS_PY)],
                [bash(tests)],
                _report("Added stats.mean with a test."),
            ],
            "Make add faster": [
                [read("calc.py")],
                # A careless "optimisation" that breaks add: the judge's gate must catch it.
                [edit("calc.py", "return a + b", "return a - b  # fewer carries")],
                _report("Rewrote add to avoid carries."),
            ],
        },
        latency_s=latency_s,
    )


def make_sample_project(root: Path) -> Path:
    """A small git project with passing tests, at ``root/calc``."""
    path = root / "calc"
    init_repo(path, SAMPLE_FILES)
    return path


def write_portfolio(root: Path, project_path: Path) -> Path:
    """The demo's portfolio file, next to its data folder."""
    config = {
        "name": "demo",
        "data_dir": str(root / "data"),
        "projects": [{
            "name": "calc",
            "path": str(project_path),
            "max_workers": 3,
            "test_command": f"{sys.executable} -m unittest -q",
            "planner_context_files": ["CLAUDE.md"],
            "worker_timeout_seconds": 120,
        }],
    }
    path = root / "portfolio.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def check_outcome(summary: CycleSummary) -> None:
    """Raise unless the cycle ended as scripted: two branches merged, the broken one rejected."""
    if summary.status is CycleStatus.done and len(summary.merged) == 2 and len(summary.rejected) == 1:
        return
    raise OrchestratorError(
        f"the demo cycle {summary.cycle_id or '(none)'} ended {summary.status!r} with "
        f"{len(summary.merged)} merged and {len(summary.rejected)} rejected, not 2 and 1 as scripted: "
        "see its log above and its audit trail; run again with `orch --debug demo` for tracebacks"
    )
