"""``orch init``: settings detected from real repositories, the portfolio file it writes, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from orch_cli import orch
from test_bad_input import snapshot

from orchestrator.adapters.git_commands import init_repo
from orchestrator.adapters.git_repo import GitRepo
from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.demo.scripted import Scenario, ScriptedModel, structured, write

PYTHON = "python3" if shutil.which("python3") else "python"
CALC = "def add(a, b):\n    return a + b\n"
PYTEST_TESTS = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
UNITTEST_TESTS = ("import unittest\n\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
                  "    def test_add(self):\n        self.assertEqual(add(1, 2), 3)\n")
PYPROJECT = '[project]\nname = "calc"\n\n[tool.pytest.ini_options]\naddopts = "-ra"\n\n[tool.ruff]\nline-length = 100\n'
NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True).stdout


def commit(path: Path, *args: str) -> None:
    git(path, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", *args)


def init(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.delenv("ORCH_CONFIG", raising=False)
    return orch(capsys, monkeypatch, "init", *args)


def written(path: Path) -> dict[str, Any]:
    load_portfolio(path)  # what init wrote loads as it is
    return dict(json.loads(path.read_text()))


def package_json(**scripts: str) -> str:
    return json.dumps({"name": "web", "version": "1.0.0", "scripts": scripts})


def test_a_python_repo_with_pytest_and_ruff(tmp_path: Path, capsys, monkeypatch) -> None:
    repo = tmp_path / "calc"
    init_repo(repo, {"calc.py": CALC, "tests/test_calc.py": PYTEST_TESTS, "pyproject.toml": PYPROJECT,
                     "README.md": "# calc\n", "CLAUDE.md": "# calc\n\n## Backlog\n\n- subtract\n"})
    monkeypatch.chdir(repo)

    code, out = init(capsys, monkeypatch)

    assert code == 0, out
    data = written(repo / "orch.json")
    assert data["data_dir"] == ".orch/data"
    assert data["projects"] == [{
        "name": "calc", "path": ".", "test_command": f"{PYTHON} -m pytest -q", "lint_command": "ruff check .",
        "planner_context_files": ["CLAUDE.md", "README.md"],
    }]
    assert "detected pytest from pyproject.toml [tool.pytest.ini_options]" in out
    assert "detected ruff from pyproject.toml [tool.ruff]" in out
    assert "orch run --project calc --config orch.json" in out and "orch doctor --config orch.json" in out
    # Neither the config nor the data dir shows up as a change in the user's checkout.
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert {".orch/", "/orch.json"} <= set((repo / ".git" / "info" / "exclude").read_text().split())


def test_a_node_repo_uses_its_own_scripts(tmp_path: Path, capsys, monkeypatch) -> None:
    init_repo(tmp_path / "web", {"package.json": package_json(test="vitest run", lint="eslint src"),
                                 "eslint.config.js": "export default [];\n", "AGENTS.md": "# web\n"})
    monkeypatch.chdir(tmp_path)

    code, out = init(capsys, monkeypatch, "web", "--config", "portfolio.json")

    assert code == 0, out
    data = written(tmp_path / "portfolio.json")
    assert data["data_dir"] == "./data"  # beside the config, outside the repository
    [project] = data["projects"]
    assert project == {"name": "web", "path": "web", "test_command": "npm test", "lint_command": "npm run lint",
                       "planner_context_files": ["AGENTS.md"]}
    assert "also found for lint_command: `npx eslint .` (eslint from eslint.config.js)" in out


def test_npm_placeholder_test_script_is_not_taken(tmp_path: Path, capsys, monkeypatch) -> None:
    init_repo(tmp_path / "web", {"package.json": package_json(test=NPM_PLACEHOLDER),
                                 "Makefile": "VERSION := 1\n\ntest:\n\tnode test.js\n"})
    code, out = init(capsys, monkeypatch, str(tmp_path / "web"), "--config", str(tmp_path / "orch.json"))
    assert code == 0, out
    [project] = written(tmp_path / "orch.json")["projects"]
    assert project["test_command"] == "make test" and project["lint_command"] == ""
    assert "npm's placeholder" in out and "no lint tool configured: lint_command left empty" in out
    assert project["planner_context_files"] == [] and "no CLAUDE.md, AGENTS.md or README on main" in out


def test_only_a_placeholder_leaves_the_test_command_empty(tmp_path: Path, capsys, monkeypatch) -> None:
    init_repo(tmp_path / "web", {"package.json": package_json(test=NPM_PLACEHOLDER)})
    code, out = init(capsys, monkeypatch, str(tmp_path / "web"), "-c", str(tmp_path / "orch.json"))
    assert code == 0 and written(tmp_path / "orch.json")["projects"][0]["test_command"] == ""
    assert "test_command left empty" in out


@pytest.mark.parametrize(("files", "test_command", "lint_command"), [
    ({"Cargo.toml": '[package]\nname = "crab"\n', "src/lib.rs": "", "README": "crab\n"}, "cargo test", ""),
    ({"go.mod": "module example.com/gopher\n", "main.go": "package main\n", ".golangci.yml": "linters: {}\n"},
     "go test ./...", "golangci-lint run"),
])
def test_cargo_and_go_repos(tmp_path: Path, capsys, monkeypatch, files: dict[str, str], test_command: str,
                            lint_command: str) -> None:
    init_repo(tmp_path / "repo", files)
    code, out = init(capsys, monkeypatch, str(tmp_path / "repo"), "-c", str(tmp_path / "orch.json"))
    assert code == 0, out
    [project] = written(tmp_path / "orch.json")["projects"]
    assert (project["test_command"], project["lint_command"]) == (test_command, lint_command)


def test_unittest_with_the_repositorys_own_virtualenv(tmp_path: Path, capsys, monkeypatch) -> None:
    repo = tmp_path / "calc"
    init_repo(repo, {"calc.py": CALC, "tests/test_calc.py": UNITTEST_TESTS, ".gitignore": ".venv/\n"})
    venv_python = repo / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    # An interpreter without site-packages: it cannot import pytest, as a fresh virtualenv.
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    venv_python.chmod(0o755)

    code, out = init(capsys, monkeypatch, str(repo), "-c", str(tmp_path / "orch.json"))

    assert code == 0, out
    command = written(tmp_path / "orch.json")["projects"][0]["test_command"]
    # Absolute: cycles run it in worktrees, which have no .venv; tests/ is no package, so discover from it.
    assert command == f"{venv_python} -m unittest discover -s tests -q"
    assert "detected unittest" in out
    run = subprocess.run(command, shell=True, cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0 and "Ran 1 test" in run.stderr


def test_main_branch_is_recorded_only_when_the_config_would_not_find_it(tmp_path: Path, capsys, monkeypatch) -> None:
    trunk = tmp_path / "trunk"
    trunk.mkdir()
    git(trunk, "init", "-q", "-b", "trunk")
    commit(trunk, "--allow-empty", "-m", "first")
    both = tmp_path / "both"
    init_repo(both, {"a.txt": "a\n"})
    git(both, "checkout", "-q", "-b", "master")
    feature = tmp_path / "feature"
    init_repo(feature, {"a.txt": "a\n"})
    git(feature, "checkout", "-q", "-b", "work")
    config = tmp_path / "orch.json"

    assert init(capsys, monkeypatch, str(trunk), "-c", str(config))[0] == 0
    assert init(capsys, monkeypatch, str(both), "-c", str(config), "--add")[0] == 0
    code, out = init(capsys, monkeypatch, str(feature), "-c", str(config), "--add")
    assert code == 0 and "your checkout is on 'work': merged work lands on 'main'" in out

    projects = {p["name"]: p.get("main_branch") for p in written(config)["projects"]}
    assert projects == {"trunk": "trunk", "both": "master", "feature": None}
    assert {p.name: p.main_branch for p in load_portfolio(config).projects} == projects


def test_add_appends_and_keeps_the_file_as_it_was(tmp_path: Path, capsys, monkeypatch) -> None:
    init_repo(tmp_path / "one", {"README.md": "# one\n"})
    init_repo(tmp_path / "two", {"README.md": "# two\n"})
    config = tmp_path / "orch.json"
    config.write_text(json.dumps({"name": "mine", "data_dir": "state", "max_total_workers": 2,
                                  "projects": [{"name": "one", "path": "one", "max_workers": 1}]}))
    config.chmod(0o640)

    code, out = init(capsys, monkeypatch, str(tmp_path / "two"), "-c", str(config), "--add", "--name", "second")

    assert code == 0 and f"Added second to {config}" in out
    data = written(config)
    assert {k: data[k] for k in ("name", "data_dir", "max_total_workers")} == {
        "name": "mine", "data_dir": "state", "max_total_workers": 2}
    assert data["projects"][0] == {"name": "one", "path": "one", "max_workers": 1}
    assert data["projects"][1]["name"] == "second" and data["projects"][1]["path"] == "two"
    assert config.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_repository_outside_the_config_folder_gets_an_absolute_path(tmp_path: Path, capsys, monkeypatch) -> None:
    init_repo(tmp_path / "elsewhere" / "app", {"README.md": "# app\n"})
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "orch.json"
    assert init(capsys, monkeypatch, str(tmp_path / "elsewhere" / "app"), "-c", str(config))[0] == 0
    data = written(config)
    assert data["projects"][0]["path"] == str((tmp_path / "elsewhere" / "app").resolve())
    assert data["data_dir"] == "./data"


def test_an_untracked_config_in_the_checkout_does_not_stop_main(tmp_path: Path, capsys, monkeypatch) -> None:
    repo = tmp_path / "calc"
    init_repo(repo, {"calc.py": CALC})
    monkeypatch.chdir(repo)
    assert init(capsys, monkeypatch)[0] == 0
    config_before = (repo / "orch.json").read_bytes()
    project = GitRepo(repo)
    old = project.head()
    worktree = project.add_worktree("t1", "orch/t1", old)
    (worktree / "calc.py").write_text(CALC + "\n\ndef sub(a, b):\n    return a - b\n")
    new = project.commit_all(worktree, "Add sub")
    assert new is not None

    assert project.advance_main(new, old) == (True, "")

    assert "def sub" in (repo / "calc.py").read_text()  # the user's checkout moved with main
    assert (repo / "orch.json").read_bytes() == config_before
    project.remove_worktree("t1", "orch/t1")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""

    # Not even excluded: an untracked file no merge writes does not hold main back.
    (repo / ".git" / "info" / "exclude").write_text(".orch/\n")
    assert git(repo, "status", "--porcelain") == "?? orch.json\n"
    worktree = project.add_worktree("t2", "orch/t2", new)
    (worktree / "calc.py").write_text(CALC)
    newer = project.commit_all(worktree, "Drop sub")
    assert newer is not None and project.advance_main(newer, new) == (True, "")
    assert "def sub" not in (repo / "calc.py").read_text()
    assert (repo / "orch.json").read_bytes() == config_before
    project.remove_worktree("t2", "orch/t2")


# -- bad input: one line, exit 1, nothing written ------------------------------------------------


def _repo(t: Path, name: str = "app") -> str:
    init_repo(t / name, {"README.md": f"# {name}\n"})
    return str(t / name)


def _file(t: Path, name: str, content: str | bytes) -> str:
    path = t / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def _valid(t: Path) -> str:
    """A portfolio with project ``app`` at ./app."""
    _repo(t)
    return _file(t, "orch.json", json.dumps({"projects": [{"name": "app", "path": "app"}]}))


def _git_dir(t: Path, *args: str) -> str:
    (t / "repo").mkdir()
    git(t / "repo", "init", "-q", *args)
    return str(t / "repo")


def _detached_trunk(t: Path) -> str:
    path = _git_dir(t, "-b", "trunk")
    commit(Path(path), "--allow-empty", "-m", "first")
    git(Path(path), "checkout", "-q", "--detach")
    return path


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "path is a file": (lambda t: [_file(t, "notes.txt", "x")], "notes.txt: not a directory"),
    "path does not exist": (lambda t: [str(t / "gone")], "gone: no such folder"),
    "not a git repository": (lambda t: [str(t)], "not a git repository; run `git init` there"),
    "inside a repository": (lambda t: [_sub(t)], "is inside the git repository"),
    "no commits": (lambda t: [_git_dir(t)], "repository has no commits: make a first commit"),
    "bare repository": (lambda t: [_git_dir(t, "--bare")], "bare repository; point the project at a checkout"),
    "detached, no main": (lambda t: [_detached_trunk(t)], "no main or master branch and HEAD is detached"),
    "config exists": (lambda t: [_repo(t), "-c", _file(t, "orch.json", "{}")],
                      "orch.json already exists: use --add to add the project to it, or --config"),
    "config folder missing": (lambda t: [_repo(t), "-c", str(t / "nope" / "orch.json")], "no such folder for the config file"),
    "add to a missing file": (lambda t: [_repo(t), "--add", "-c", str(t / "missing.json")], "missing.json: file not found"),
    "add to a folder": (lambda t: [_repo(t), "--add", "-c", str(t)], "cannot read"),
    "add to unreadable bytes": (lambda t: [_repo(t), "--add", "-c", _file(t, "orch.json", b"\xff\xfe{")], "cannot read"),
    "add to invalid JSON": (lambda t: [_repo(t), "--add", "-c", _file(t, "orch.json", '{"projects": [}')],
                            "invalid JSON at line 1"),
    "add to an invalid portfolio": (lambda t: [_repo(t), "--add", "-c", _file(t, "orch.json", '{"projets": []}')],
                                    "projets: unknown field"),
    "add a duplicate name": (lambda t: [_repo(t, "other"), "--name", "app", "--add", "-c", _valid(t)],
                             "there is a project named 'app' already; choose another with --name"),
    "add a duplicate path": (lambda t: [str(_valid_repo(t)), "--name", "again", "--add", "-c", str(t / "orch.json")],
                             "project 'app' already has the path"),
    "invalid --name": (lambda t: [_repo(t), "--name", "my app", "-c", str(t / "orch.json")],
                       "--name 'my app' is not a valid project name"),
    "empty --name": (lambda t: [_repo(t), "--name", "", "-c", str(t / "orch.json")], "is not a valid project name"),
}


def _sub(t: Path) -> str:
    (Path(_repo(t)) / "src").mkdir()
    return str(t / "app" / "src")


def _valid_repo(t: Path) -> Path:
    _valid(t)
    return t / "app"


@pytest.mark.guarantee  # with tests/test_bad_input.py, the bad-input catalogue
@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(kind: str, tmp_path: Path, capsys, monkeypatch) -> None:
    setup, expected = CASES[kind]
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path)
    before = snapshot(tmp_path)

    code, out = init(capsys, monkeypatch, *args)

    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), out
    assert expected in lines[0], out
    assert snapshot(tmp_path) == before


# -- the first hour, end to end ------------------------------------------------------------------


SUBTRACT = CALC + "\n\ndef subtract(a, b):\n    return a - b\n"
TEST_SUBTRACT = "from calc import subtract\n\n\ndef test_subtract():\n    assert subtract(3, 1) == 2\n"
PLAN = {"findings": "calc has add only.", "proposal": "Add subtract with a test.", "tasks": [
    {"title": "Add subtract", "type": "code", "priority": 2,
     "description": "Add subtract(a, b) to calc.py and tests/test_subtract.py testing it."}]}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness", "agent_env")
def test_init_then_run_merges_a_change(tmp_path: Path, capsys, monkeypatch) -> None:
    repo = tmp_path / "calc"
    init_repo(repo, {"calc.py": CALC, "tests/test_calc.py": PYTEST_TESTS, ".gitignore": ".venv/\n",
                     "pyproject.toml": '[tool.pytest.ini_options]\npythonpath = ["."]\n',
                     "CLAUDE.md": "# calc\n\n## Backlog\n\n- A subtract function.\n"})
    venv_python = repo / ".venv" / "bin" / "python"  # the project's virtualenv: this one, with pytest
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    monkeypatch.chdir(repo)

    code, out = init(capsys, monkeypatch)
    assert code == 0, out
    assert written(repo / "orch.json")["projects"][0]["test_command"] == f"{venv_python} -m pytest -q"

    scenario = Scenario(planner=[[structured(PLAN)]], workers={"Add subtract": [
        [write("calc.py", SUBTRACT), write("tests/test_subtract.py", TEST_SUBTRACT)],
        [structured({"summary": "Added subtract with a test.", "completed": True})]]})
    with ScriptedModel(scenario) as model:
        for key, value in model.env().items():
            monkeypatch.setenv(key, value)
        code, out = orch(capsys, monkeypatch, "run", "--project", "calc")  # ./orch.json, found by itself

    assert code == 0, out
    assert "planned 1, worked 1, passed 1, merged 1" in out
    assert "def subtract" in git(repo, "show", "main:calc.py")
    assert "def subtract" in (repo / "calc.py").read_text()  # the checkout moved with main
    assert (repo / ".orch" / "data" / "calc.db").is_file()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
