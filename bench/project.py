"""Generated sample projects and the scripted model's part in them.

A project of ``n`` tasks: the planner looks around and proposes ``n``
independent tasks (each a small module with its own test); every worker
reads, writes its two files, runs the tests in its sandbox and reports;
the reviewer reads and approves. A chain about as short as the offline
demo's: the critical path is short, so the overhead shows. The benchmark's
project also carries a small library with a pytest suite of a few hundred
tests that takes seconds (:mod:`bench.suite`), as a real project's does.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.git_commands import init_repo
from orchestrator.demo.scripted import (
    Scenario,
    Script,
    Turn,
    bash,
    checks_then,
    read,
    structured,
    text,
    tool,
    write,
)

from .suite import suite_files

PLANNER_TURNS, WORKER_TURNS, JUDGE_TURNS = 3, 4, 2
TEST_COMMAND = f"{sys.executable} -m unittest -q"
PYTEST_COMMAND = f"{sys.executable} -m pytest -q"
SUITE_TESTS = 400
"""The benchmark's sample suite: about 3 s on one core of the project's machine."""


@dataclass(frozen=True)
class Layout:
    """Where a project's step modules and their tests go, and how its tests run."""

    module: str = "mod_{i}.py"
    test: str = "test_mod_{i}.py"
    imports: str = "mod_{i}"
    readme: str = "README.md"
    test_command: str = TEST_COMMAND
    green_command: str = TEST_COMMAND
    """Passes when main is as green as it came (a real project's may fail a test as shipped)."""
    worker_test: str = ""
    """What a worker runs to check its step ({i} its number); empty: the test command."""


SAMPLE = Layout()
WITH_SUITE = Layout(test_command=PYTEST_COMMAND, green_command=PYTEST_COMMAND)
"""The sample project with :mod:`bench.suite`'s library and tests (``make_project(..., suite_tests=N)``)."""


def _module(i: int, layout: Layout, broken: bool = False) -> tuple[str, str]:
    """Step ``i``'s module and its test; a ``broken`` module is off by one, so its test fails."""
    code = f'def step_{i}(x):\n    """Add {i} to x."""\n    return x + {i + broken}\n'
    test = (
        f"import unittest\n\nfrom {layout.imports.format(i=i)} import step_{i}\n\n\n"
        f"class Step{i}Test(unittest.TestCase):\n"
        f"    def test_step(self):\n        self.assertEqual(step_{i}(1), {i + 1})\n"
    )
    return code, test


def make_project(root: Path, name: str = "sample", suite_tests: int = 0) -> Path:
    """A git project with a passing test suite at ``root/name``; with ``suite_tests``, a pytest suite of about as many."""
    path = root / name
    runner = "python -m pytest" if suite_tests else "python -m unittest"
    init_repo(path, {
        ".gitignore": "__pycache__/\n.pytest_cache/\n",
        "README.md": f"# {name}\n\nSmall steps. Tests: `{runner}`.\n",
        **(suite_files(suite_tests) if suite_tests else {}),
        "core.py": 'def identity(x):\n    """Return x."""\n    return x\n',
        "test_core.py": (
            "import unittest\n\nfrom core import identity\n\n\n"
            "class CoreTest(unittest.TestCase):\n"
            "    def test_identity(self):\n        self.assertEqual(identity(3), 3)\n"
        ),
    })
    return path


def plan(steps: list[int], proposal: str, layout: Layout = SAMPLE) -> dict:
    """The planner's output: one task per step number."""
    tasks = [{"title": f"Add step {i}", "type": "code", "priority": 2,
              "description": f"Create {layout.module.format(i=i)} with step_{i}(x) returning x + {i}, "
                             f"and {layout.test.format(i=i)}."}
             for i in steps]
    return {"findings": "One module with one test.", "proposal": proposal, "deferred": [], "risks": [],
            "tasks": tasks}


def planner_turns(final: Turn) -> Script:
    """Look around, read, then ``final``: the plan."""
    return [[text("Looking."), tool("Glob", pattern="*.py")], [read("README.md")], final]


def worker_script(i: int, layout: Layout = SAMPLE, broken: bool = False) -> Script:
    """Read, write the step's module and test, run the tests, report (``broken``: done all the same)."""
    code, test = _module(i, layout, broken)
    return [
        [read(layout.readme)],
        [write(layout.module.format(i=i), code), write(layout.test.format(i=i), test)],
        [bash(layout.worker_test.format(i=i) if layout.worker_test else layout.test_command)],
        [structured({"summary": f"Added step_{i} with a test.", "completed": True})],
    ]


def judge_script(layout: Layout = SAMPLE, reads: int = 1) -> Script:
    """Read (``reads`` responses), wait for the branch's checks if they run meanwhile, then approve."""
    approve = [structured({"approve": True, "reasons": ["small and tested"], "summary": "Fine."})]
    script: Script = [[read(layout.readme)] for _ in range(reads)]
    return [*script, checks_then(approve), approve]


def scenario(n: int, latency_s: float, layout: Layout = SAMPLE, broken: frozenset[int] = frozenset(),
             judge_reads: int = 1) -> Scenario:
    """Planner, ``n`` workers and the judge, each with a fixed number of turns; the steps in ``broken`` fail their tests."""
    return Scenario(
        planner=planner_turns([structured(plan(list(range(n)), f"Add {n} small steps.", layout))]),
        workers={f"Add step {i}\n": worker_script(i, layout, i in broken) for i in range(n)},
        judge=judge_script(layout, judge_reads),
        latency_s=latency_s,
    )


def write_portfolio(root: Path, project: Path, n: int, test_command: str = TEST_COMMAND,
                    **settings: object) -> Path:
    """The portfolio file of one project with ``n`` workers; ``settings`` are more of the project's fields."""
    config = {
        "name": "bench",
        "data_dir": str(root / "data"),
        "max_total_workers": max(n, 1) * 2,
        "projects": [{
            "name": project.name, "path": str(project), "max_workers": n,
            "test_command": test_command, **settings,
        }],
    }
    path = root / "portfolio.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path
