"""Tests for the portfolio file: defaults, path resolution, lookup and errors.

Every test writes a real JSON file and, where a project needs one, a real
git repository made with ``git init``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.portfolio_file import CONFIG_ENV, load_portfolio
from orchestrator.domain.config import PortfolioConfig, ProjectConfig, portfolio_from_dict
from orchestrator.domain.errors import ConfigError

# The example from the seed's README, byte for byte except "path".
SEED_EXAMPLE = """
{
  "name": "personal",
  "data_dir": "./data",
  "log_level": "INFO",
  "projects": [
    {
      "name": "my-app",
      "path": "/path/to/my-app",
      "enabled": true,
      "priority": 1,
      "max_workers": 3,
      "worker_timeout_seconds": 300,
      "model": "sonnet",
      "planner_model": "sonnet",
      "judge_model": "haiku",
      "max_budget_per_task": 0.50,
      "planner_context_files": ["CLAUDE.md"],
      "backlog_source": "claude_md",
      "cycle_interval_minutes": 30,
      "test_command": "pytest",
      "lint_command": "ruff check ."
    }
  ]
}
"""


def git_repo(path: Path) -> Path:
    """A fresh, empty git repository at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def write_config(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "my-app")


def config_error(path: Path, data: Any) -> str:
    """Load ``data`` written to ``path``; return the one-line ConfigError text."""
    write_config(path, data)
    with pytest.raises(ConfigError) as info:
        load_portfolio(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert info.value.__cause__ is not None  # wrapped with `raise ... from`
    return message


# -- defaults and the seed format ---------------------------------------------


def test_minimal_project_gets_seed_defaults(tmp_path: Path, repo: Path) -> None:
    cfg_file = write_config(tmp_path / "orch.json", {"projects": [{"name": "a", "path": "my-app"}]})
    portfolio = load_portfolio(cfg_file)

    assert portfolio.name == "default"
    assert portfolio.log_level == "INFO"
    assert portfolio.max_total_workers is None  # no portfolio-wide cap: max_workers holds
    assert portfolio.source == cfg_file
    p = portfolio.project("a")
    assert p.path == repo.resolve()
    assert (p.enabled, p.priority, p.max_workers, p.worker_timeout_seconds) == (True, 1, 3, 300)
    assert (p.model, p.planner_model, p.judge_model, p.resolver_model) == (
        "sonnet",
        "opus",
        "haiku",
        None,
    )
    assert (p.max_budget_per_task, p.max_budget_per_plan, p.max_budget_per_review) == (
        0.50,
        1.00,
        0.25,
    )
    assert p.planner_context_files == ["CLAUDE.md"]
    assert (p.backlog_source, p.backlog_file) == ("claude_md", None)
    assert p.cycle_interval_minutes == 30
    assert (p.test_command, p.lint_command) == ("", "")
    assert (p.test_timeout_seconds, p.lint_timeout_seconds) == (600, 300)
    assert (p.planner_timeout_seconds, p.judge_timeout_seconds) == (600, 300)
    assert (p.planner_max_turns, p.worker_max_turns, p.judge_max_turns) == (40, 60, 20)
    assert (p.git_branch_prefix, p.main_branch, p.push) == ("orch", None, True)
    assert (p.max_task_attempts, p.max_consecutive_failures) == (3, 5)


def test_seed_example_loads_unchanged(tmp_path: Path, repo: Path) -> None:
    text = SEED_EXAMPLE.replace("/path/to/my-app", str(repo))
    cfg_file = tmp_path / "config" / "personal.json"
    cfg_file.parent.mkdir()
    cfg_file.write_text(text)

    portfolio = load_portfolio(cfg_file)

    assert portfolio.name == "personal"
    assert portfolio.data_dir == (cfg_file.parent / "data").resolve()
    app = portfolio.project("my-app")
    assert app.planner_model == "sonnet"  # the file's value wins over the default
    assert (app.test_command, app.lint_command) == ("pytest", "ruff check .")
    assert app.max_budget_per_task == 0.5


def test_every_field_has_a_description() -> None:
    # The README's configuration table is generated from these.
    for model in (PortfolioConfig, ProjectConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_source_is_not_dumped(tmp_path: Path, repo: Path) -> None:
    cfg_file = write_config(tmp_path / "orch.json", {"projects": [{"name": "a", "path": "my-app"}]})
    dumped = load_portfolio(cfg_file).model_dump()
    assert "source" not in dumped and "_source" not in dumped


# -- path resolution -----------------------------------------------------------


def test_relative_paths_resolve_against_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    git_repo(conf_dir / "repos" / "app")
    cfg_file = write_config(
        conf_dir / "p.json",
        {"data_dir": "state", "projects": [{"name": "app", "path": "repos/app"}]},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    portfolio = load_portfolio(cfg_file)

    assert portfolio.data_dir == (conf_dir / "state").resolve()
    assert portfolio.project("app").path == (conf_dir / "repos" / "app").resolve()
    assert portfolio.data_dir.is_absolute()


def test_default_data_dir_is_next_to_config(tmp_path: Path) -> None:
    portfolio = portfolio_from_dict({}, tmp_path / "sub" / "p.json")
    assert portfolio.data_dir == (tmp_path / "sub" / "data").resolve()
    assert portfolio.projects == []


def test_absolute_path_is_kept(tmp_path: Path, repo: Path) -> None:
    portfolio = portfolio_from_dict(
        {"projects": [{"name": "a", "path": str(repo)}]}, tmp_path / "x" / "p.json"
    )
    assert portfolio.project("a").path == repo.resolve()


# -- lookup --------------------------------------------------------------------


def test_orch_config_env_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = write_config(tmp_path / "somewhere" / "p.json", {"name": "from-env"})
    monkeypatch.setenv(CONFIG_ENV, str(cfg_file))
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "orch.json", {"name": "from-cwd"})  # the env var wins

    assert load_portfolio().name == "from-env"


def test_orch_json_in_cwd_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "config" / "portfolio.json", {"name": "second"})
    write_config(tmp_path / "orch.json", {"name": "first"})

    portfolio = load_portfolio()

    assert portfolio.name == "first"
    assert portfolio.source == (tmp_path / "orch.json").absolute()


def test_config_portfolio_json_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "config" / "portfolio.json", {"name": "second"})

    assert load_portfolio().name == "second"


def test_no_config_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no config file: pass --config FILE, set ORCH_CONFIG"):
        load_portfolio()


# -- portfolio methods ---------------------------------------------------------


def test_enabled_projects_sorted_by_priority_then_name(tmp_path: Path, repo: Path) -> None:
    projects = [
        {"name": "zeta", "path": str(repo), "priority": 0},
        {"name": "beta", "path": str(repo), "priority": 2},
        {"name": "alpha", "path": str(repo), "priority": 2},
        {"name": "off", "path": str(repo), "priority": 0, "enabled": False},
    ]
    portfolio = portfolio_from_dict({"projects": projects}, tmp_path / "p.json")
    assert [p.name for p in portfolio.enabled_projects()] == ["zeta", "alpha", "beta"]


def test_unknown_project_names_file_and_known(tmp_path: Path, repo: Path) -> None:
    cfg_file = write_config(
        tmp_path / "p.json",
        {"projects": [{"name": "b", "path": str(repo)}, {"name": "a", "path": str(repo)}]},
    )
    with pytest.raises(ConfigError) as info:
        load_portfolio(cfg_file).project("x")
    assert str(info.value) == f"unknown project 'x' in {cfg_file}; known: a, b"


# -- errors --------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_portfolio(missing)
    assert str(info.value) == f"{missing}: file not found"


def test_invalid_json_gives_line_and_column(tmp_path: Path) -> None:
    cfg_file = tmp_path / "p.json"
    cfg_file.write_text('{\n  "name": "x",\n}\n')
    with pytest.raises(ConfigError) as info:
        load_portfolio(cfg_file)
    message = str(info.value)
    assert message.startswith(f"{cfg_file}: invalid JSON at line 3, column 1: ")
    assert "\n" not in message


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    cfg_file = write_config(tmp_path / "p.json", [1, 2])
    with pytest.raises(ConfigError, match="top level must be a JSON object, not an array"):
        load_portfolio(cfg_file)


def project(repo: Path, **fields: Any) -> dict[str, Any]:
    return {"projects": [{"name": "my-app", "path": str(repo), **fields}]}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"max_workers": "three"},
            "projects[0] (my-app).max_workers: input should be a valid integer",
        ),
        ({"enabled": "maybe"}, "projects[0] (my-app).enabled: input should be a valid boolean"),
        ({"max_workers": 0}, "projects[0] (my-app).max_workers: must be greater than 0"),
        ({"max_budget_per_task": -1}, "projects[0] (my-app).max_budget_per_task: must be greater"),
        ({"worker_timeout_seconds": 0}, "projects[0] (my-app).worker_timeout_seconds: must be"),
        ({"priority": -1}, "projects[0] (my-app).priority: must be at least 0"),
        ({"max_worker": 3}, "projects[0] (my-app).max_worker: unknown field"),
        (
            {"backlog_source": "backlog_file"},
            "projects[0] (my-app).backlog_file: required when backlog_source is 'backlog_file'",
        ),
        ({"backlog_source": "jira"}, "projects[0] (my-app).backlog_source: input should be"),
        ({"git_branch_prefix": "my orch"}, "git_branch_prefix: branch prefix 'my orch' is not"),
        ({"git_branch_prefix": "a..b"}, "git_branch_prefix: branch prefix 'a..b' is not"),
        ({"git_branch_prefix": "-orch"}, "git_branch_prefix: branch prefix '-orch' is not"),
        ({"main_branch": "ma@{in"}, "main_branch: branch 'ma@{in' is not a valid git ref"),
    ],
)
def test_project_field_errors(
    tmp_path: Path, repo: Path, fields: dict[str, Any], expected: str
) -> None:
    cfg_file = tmp_path / "p.json"
    assert expected in config_error(cfg_file, project(repo, **fields))


def test_backlog_file_accepted_when_given(tmp_path: Path, repo: Path) -> None:
    data = project(repo, backlog_source="backlog_file", backlog_file="BACKLOG.md")
    portfolio = portfolio_from_dict(data, tmp_path / "p.json")
    assert portfolio.project("my-app").backlog_file == "BACKLOG.md"


@pytest.mark.parametrize("name", ["my app", "a/b", "", "..", "x;rm"])
def test_bad_project_name(tmp_path: Path, repo: Path, name: str) -> None:
    data = {"projects": [{"name": name, "path": str(repo)}]}
    message = config_error(tmp_path / "p.json", data)
    assert ".name: " in message


def test_several_errors_report_the_first_and_count(tmp_path: Path, repo: Path) -> None:
    message = config_error(tmp_path / "p.json", project(repo, max_workers=0, priority=-1, bogus=1))
    assert message.endswith("(and 2 more)")
    # Fields are checked in declaration order: priority comes before max_workers.
    assert "projects[0] (my-app).priority: must be at least 0" in message


def test_duplicate_project_names(tmp_path: Path, repo: Path) -> None:
    data = {"projects": [{"name": "a", "path": str(repo)}, {"name": "a", "path": str(repo)}]}
    message = config_error(tmp_path / "p.json", data)
    assert message.endswith("projects: duplicate project name 'a'")


def test_path_missing(tmp_path: Path) -> None:
    data = {"projects": [{"name": "a", "path": "gone"}]}
    message = config_error(tmp_path / "p.json", data)
    assert message.endswith(f"projects[0] (a).path: {tmp_path.resolve() / 'gone'} does not exist")


def test_path_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    data = {"projects": [{"name": "a", "path": "file.txt"}]}
    message = config_error(tmp_path / "p.json", data)
    assert message.endswith(
        f"projects[0] (a).path: {tmp_path.resolve() / 'file.txt'} is not a directory"
    )


def test_path_not_a_git_repo(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    data = {"projects": [{"name": "a", "path": "plain"}]}
    message = config_error(tmp_path / "p.json", data)
    assert "projects[0] (a).path: " in message
    assert "is not a git repository" in message


def test_missing_required_field(tmp_path: Path) -> None:
    message = config_error(tmp_path / "p.json", {"projects": [{"name": "a"}]})
    assert message.endswith("projects[0] (a).path: required field is missing")


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR"])
def test_log_level_is_case_insensitive(tmp_path: Path, level: str) -> None:
    portfolio = portfolio_from_dict({"log_level": level}, tmp_path / "p.json")
    assert portfolio.log_level == level.upper()


def test_bad_log_level(tmp_path: Path) -> None:
    message = config_error(tmp_path / "p.json", {"log_level": "verbose"})
    assert message.endswith(
        "log_level: 'verbose' is not a log level: use one of DEBUG, INFO, WARNING, ERROR"
    )


def test_portfolio_level_errors(tmp_path: Path) -> None:
    assert "max_total_workers: must be greater than 0" in config_error(
        tmp_path / "p.json", {"max_total_workers": 0}
    )
    assert "data_dir: must not be empty" in config_error(tmp_path / "p.json", {"data_dir": ""})
    assert "extra: unknown field" in config_error(tmp_path / "p.json", {"extra": 1})
