"""The portfolio file: typed, validated configuration for every project.

The seed's JSON format loads unchanged; every field added since has a
default. Relative paths resolve against the directory of the config file
(not the current directory), so a portfolio works from wherever ``orch`` is
run. Every mistake surfaces as one :class:`ConfigError` line naming the file
and the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.domain.config_errors import describe, json_type
from orchestrator.domain.errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "PortfolioConfig",
    "ProjectConfig",
    "portfolio_from_dict",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""Accepted values of ``log_level`` (case-insensitive in the file)."""

# A project name becomes a file name (its SQLite store) and a Prefect
# deployment name, so it is kept to characters safe in both.
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_GITHUB_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
# Characters git refuses anywhere in a ref (see git-check-ref-format).
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def _invalid(kind: str, message: str) -> PydanticCustomError:
    """A validation error with a ready-made message.

    No context is passed, so braces in ``message`` (a path, a git ref with
    ``@{``) are kept as they are rather than read as a template.
    """
    return PydanticCustomError(kind, message)


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """Make ``value`` absolute against the config file's directory (or the cwd)."""
    base = (info.context or {}).get("base_dir") or Path.cwd()
    return (Path(base) / value.expanduser()).resolve()


def _not_empty_path(value: Any) -> Any:
    # Path("") silently means ".", which would point at the config's own folder.
    if isinstance(value, str) and not value.strip():
        raise _invalid("empty_path", "must not be empty")
    return value


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise _invalid("url", f"{value!r} is not an http(s) URL")
    return value


def _check_ref(value: str, what: str) -> str:
    """Reject a branch name (or prefix) that git would refuse."""
    problem = None
    if _REF_FORBIDDEN.search(value):
        problem = "contains a space, control character or one of ~^:?*[\\"
    elif ".." in value or "@{" in value or value == "@":
        problem = "contains '..' or '@{' or is '@'"
    elif value.startswith("-"):
        problem = "starts with '-'"
    elif value.endswith(".lock") or value.endswith("."):
        problem = "ends with '.' or '.lock'"
    elif any(not part or part.startswith(".") for part in value.split("/")):
        problem = "has an empty component or one starting with '.'"
    if problem:
        raise _invalid("git_ref", f"{what} {value!r} is not a valid git ref: {problem}")
    return value


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AgentEnvVar(BaseModel):
    """An environment variable passed through to the agents' tools."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The variable's name.")
    secret: bool = Field(False, description="Its value must never appear in a branch.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _ENV_NAME_RE.match(value):
            raise _invalid("env_name", f"{value!r} is not an environment variable name")
        return value


class ProjectConfig(BaseModel):
    """One git project in the portfolio and how the orchestrator works on it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        description="Project identifier; also its store's file name and its Prefect "
        "deployment name (letters, digits, '-', '_' and '.').",
    )
    path: Path = Field(
        description="The project's git repository; relative paths resolve against the "
        "config file's directory."
    )
    enabled: bool = Field(True, description="Whether scheduled and portfolio runs include it.")
    priority: int = Field(1, ge=0, description="Order among projects: lower numbers run first.")
    max_workers: int = Field(3, gt=0, description="Max parallel workers per cycle.")
    worker_timeout_seconds: int = Field(
        300, gt=0, description="Wall-clock limit of one worker (or resolver) session."
    )
    model: str = Field("sonnet", min_length=1, description="Claude model for workers.")
    planner_model: str = Field(
        "opus", min_length=1, description="Model for the planner (can be stronger)."
    )
    judge_model: str = Field(
        "haiku", min_length=1, description="Model for the AI reviewer (can be cheaper)."
    )
    resolver_model: str | None = Field(
        None, min_length=1, description="Model that resolves merge conflicts; null = `model`."
    )
    max_budget_per_task: float = Field(
        0.50, gt=0, description="USD cap per worker (and resolver) session."
    )
    max_budget_per_plan: float = Field(1.00, gt=0, description="USD cap per planner session.")
    max_budget_per_review: float = Field(0.25, gt=0, description="USD cap per AI review.")
    planner_context_files: list[str] = Field(
        default_factory=lambda: ["CLAUDE.md"],
        description="Files (relative to the project) the planner reads for backlog and context.",
    )
    replan_after_hours: float = Field(
        24, gt=0, description="The planner is asked again only when what it reads changed (main, the "
        "backlog, the open tasks, recent outcomes) or this long after its last plan."
    )
    backlog_source: Literal["claude_md", "backlog_file", "github_issues", "manual"] = Field(
        "claude_md",
        description="Where work comes from: `claude_md`, `backlog_file`, `github_issues`, "
        "`manual` (only tasks added with `orch add-task`).",
    )
    backlog_file: str | None = Field(
        None,
        validate_default=True,  # so a missing one is caught when backlog_source needs it
        description="Backlog file, relative to the project; required when backlog_source "
        "is `backlog_file`.",
    )
    github_repo: str | None = Field(
        None, description="GitHub repository `owner/name` for issues and pull requests; "
        "null = read from the `origin` remote."
    )
    github_label: str = Field(
        "orch", min_length=1, description="Open issues with this label are the backlog "
        "(backlog_source `github_issues`)."
    )
    github_api_url: str = Field(
        "https://api.github.com", min_length=1,
        description="GitHub REST API base; GitHub Enterprise uses `https://HOST/api/v3`.",
    )
    github_token_env: str = Field(
        "GITHUB_TOKEN", min_length=1, description="Environment variable holding the GitHub token."
    )
    github_on_merge: Literal["close", "label"] = Field(
        "close", description="What happens to an issue when its task merges: `close` it, or "
        "`label` it with github_done_label (both add a comment linking the commit)."
    )
    github_done_label: str = Field(
        "orch-done", min_length=1, description="Label added when github_on_merge is `label`."
    )
    merge_strategy: Literal["merge", "pr"] = Field(
        "merge", description="`merge`: passing branches merge into main here. `pr`: they are "
        "pushed and a GitHub pull request is opened; the task is done when it merges."
    )
    auto_merge: bool = Field(
        False, description="With merge_strategy `pr`: merge our pull request through GitHub's API once "
        "GitHub says nothing stands in its way (approved where required, required checks green, no conflict)."
    )
    merge_method: Literal["merge", "squash", "rebase"] = Field(
        "merge", description="How auto_merge merges a pull request: `merge`, `squash` or `rebase`."
    )
    on_ci_failure: Literal["fix", "notify", "ignore"] = Field(
        "fix", description="With merge_strategy `pr`, when CI fails on our pull request: `fix` (its worker "
        "fixes it from the failing checks' output), `notify` (a notice only) or `ignore`."
    )
    max_ci_fix_attempts: int = Field(
        3, ge=0, le=20, description="CI fix rounds per pull request, and review rounds apart; past them, "
        "a needs_human notice."
    )
    on_review_comments: Literal["address", "notify", "ignore"] = Field(
        "address", description="With merge_strategy `pr`, reviews asking for changes and review comments on "
        "our pull request: `address` (its worker changes the branch and each comment gets a reply), "
        "`notify` or `ignore`."
    )
    review_authors: list[str] = Field(
        default_factory=list, description="Logins whose review comments are acted on besides those with "
        "write access (author association OWNER, MEMBER or COLLABORATOR)."
    )
    require_approval: Literal["none", "plan", "merge"] = Field(
        "none", description="Stop for a person's approval: `plan` before workers start, "
        "`merge` before passing branches merge (or open pull requests)."
    )
    approval_timeout_minutes: float = Field(
        1440, gt=0, description="How long a cycle waits for approval before approval_default applies."
    )
    approval_default: Literal["approve", "reject"] = Field(
        "reject", description="What a wait for approval that times out decides."
    )
    max_budget_per_cycle: float | None = Field(
        None, gt=0, description="USD cap on one cycle's agent sessions (null = none)."
    )
    max_budget_per_day: float | None = Field(
        None, gt=0, description="USD cap on the project's agent sessions per UTC day (null = none)."
    )
    webhook_url: str | None = Field(
        None, description="Slack-compatible webhook for this project's notices; "
        "null = the portfolio's webhook_url."
    )
    retention_days: int | None = Field(
        None, ge=0, description="Days this project keeps what finished cycles leave behind; "
        "null = the portfolio's retention_days."
    )
    cycle_interval_minutes: int = Field(
        30, gt=0, description="How often the schedule triggers a cycle."
    )
    test_command: str = Field("", description="Shell command that runs the tests (empty = skip).")
    lint_command: str = Field("", description="Shell command that runs the linter (empty = skip).")
    test_timeout_seconds: int = Field(600, gt=0, description="Limit on one test run.")
    test_retries: int = Field(
        1, ge=0, le=5, description="Times a failing test run is run again before its failures count: "
        "a test that fails, then passes, is flaky and rejects nothing."
    )
    test_strategy: Literal["auto", "batch", "per_branch"] = Field(
        "auto", description="`per_branch` tests each branch, then the merged result; `batch` tests only the "
        "merged result of the passing branches and finds a breaking one by bisection; `auto` takes batch once "
        "testing every branch would add half a worker session's time to a cycle."
    )
    test_cache: bool = Field(
        True, description="Reuse a test result for a tree already tested with the same command and "
        "environment in the last 6 hours, rather than run the tests again."
    )
    max_parallel_tests: int | None = Field(
        None, ge=1, description="Test runs of this project at once (its base's, its branches' and its "
        "merge's); null = the CPU count."
    )
    review_while_testing: bool = Field(
        False, description="Start a branch's AI review while its tests and lint run (once they take over 3 s), "
        "rather than after them: the reviewer reads their outcome when it is in, and is stopped if they fail. "
        "Off by default: on two cores it saved no time (see BENCHMARKS.md)."
    )
    lint_timeout_seconds: int = Field(300, gt=0, description="Limit on one lint run.")
    planner_timeout_seconds: int = Field(600, gt=0, description="Limit on one planner session.")
    judge_timeout_seconds: int = Field(300, gt=0, description="Limit on one AI review session.")
    planner_max_turns: int = Field(40, gt=0, description="Model calls allowed to the planner.")
    worker_max_turns: int = Field(60, gt=0, description="Model calls allowed to a worker.")
    judge_max_turns: int = Field(20, gt=0, description="Model calls allowed to the AI reviewer.")
    git_branch_prefix: str = Field(
        "orch", description="Prefix of task branches (`<prefix>/<task id>`)."
    )
    main_branch: str | None = Field(
        None, description="Branch that receives merged work; null = detect from the repository."
    )
    push: bool = Field(True, description="Push main after merging when the project has a remote.")
    max_task_attempts: int = Field(
        3, gt=0, description="Attempts per task: the first try plus retries."
    )
    max_consecutive_failures: int = Field(
        5, gt=0, description="Failed tasks in a row that pause the project."
    )
    api_retries: int = Field(
        3, ge=0, description="Retries of an agent session after a transient model API error "
        "(429, 5xx, 529, refused connection, timeout), resuming the session."
    )
    api_retry_base_seconds: float = Field(
        2.0, ge=0, description="Wait before the first such retry; it doubles for each next one."
    )
    agent_stall_seconds: float = Field(
        300, gt=0, description="An agent session whose Claude Code CLI sends nothing for this long "
        "(10 minutes longer while a tool runs) is cut and resumed, as an API fault."
    )
    agent_env: list[AgentEnvVar] = Field(
        default_factory=list,
        description="Environment variables the agents' tools get besides PATH, HOME (their own), "
        "locale and TMPDIR: names, or `{\"name\": N, \"secret\": true}` for a value the judge "
        "must never let into a branch.",
    )
    agent_read_deny: list[str] = Field(
        default_factory=list,
        description="Paths the agents may not read, besides the defaults (~/.ssh, ~/.aws, "
        "~/.config, ~/.netrc and the like, other projects, the data dir, transcripts).",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value) or set(value) == {"."}:
            raise _invalid(
                "project_name",
                f"{value!r} is not a valid project name: use only letters, digits, '-', '_' and '.'",
            )
        return value

    @field_validator("path", mode="before")
    @classmethod
    def _path_not_empty(cls, value: Any) -> Any:
        return _not_empty_path(value)

    @field_validator("path")
    @classmethod
    def _check_repo(cls, value: Path, info: ValidationInfo) -> Path:
        path = _resolve(value, info)
        if not path.exists():
            raise _invalid("path", f"{path} does not exist")
        if not path.is_dir():
            raise _invalid("path", f"{path} is not a directory")
        # Only the git layer may import GitPython; a .git entry (a directory,
        # or a file in a worktree/submodule) is all we need to know here.
        if not (path / ".git").exists():
            raise _invalid("path", f"{path} is not a git repository (run `git init` there first)")
        return path

    @field_validator("backlog_file")
    @classmethod
    def _backlog_file_when_needed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("backlog_source") == "backlog_file" and not value:
            raise _invalid("missing_backlog_file", "required when backlog_source is 'backlog_file'")
        return value

    @field_validator("github_repo")
    @classmethod
    def _check_github_repo(cls, value: str | None) -> str | None:
        if value is not None and not _GITHUB_REPO_RE.match(value):
            raise _invalid("github_repo", f"{value!r} is not a GitHub repository: write it as 'owner/name'")
        return value

    @field_validator("github_api_url", "webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("git_branch_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return _check_ref(value, "branch prefix")

    @field_validator("main_branch")
    @classmethod
    def _check_main(cls, value: str | None) -> str | None:
        return None if value is None else _check_ref(value, "branch")


class PortfolioConfig(BaseModel):
    """The whole portfolio file: shared settings and the list of projects."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", min_length=1, description="Portfolio name.")
    data_dir: Path = Field(
        Path("./data"),
        validate_default=True,  # the default is relative too and must resolve the same way
        description="Where state (one SQLite file per project) and run results live; "
        "relative paths resolve against the config file's directory.",
    )
    log_level: str = Field(
        "INFO", description="Logging level: DEBUG, INFO, WARNING or ERROR (any case)."
    )
    max_total_workers: int | None = Field(
        None, gt=0, description="Max agent sessions (planners, workers, reviewers, resolvers) "
        "running at once across all projects; null = no portfolio-wide cap, each project's "
        "max_workers bounds its own cycles.",
    )
    webhook_url: str | None = Field(
        None, description="Slack-compatible webhook for notices of every project (cycle finished "
        "or failed, project paused, approval needed, budget reached, rate-limited)."
    )
    retention_days: int = Field(
        30, ge=0, description="Days kept of what finished cycles leave behind (agent transcripts, "
        "step results, audit files, Prefect runs); the patrol and `orch gc` remove what is older. "
        "0 = keep everything."
    )
    projects: list[ProjectConfig] = Field(
        default_factory=list, description="The projects, one entry each."
    )

    # Where the portfolio was read from; kept for messages, never dumped.
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_not_empty(cls, value: Any) -> Any:
        return _not_empty_path(value)

    @field_validator("data_dir")
    @classmethod
    def _resolve_data_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_log_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.upper() not in LOG_LEVELS:
                levels = ", ".join(LOG_LEVELS)
                raise _invalid("log_level", f"{value!r} is not a log level: use one of {levels}")
            return value.upper()
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("projects")
    @classmethod
    def _unique_names(cls, value: list[ProjectConfig]) -> list[ProjectConfig]:
        seen: set[str] = set()
        for project in value:
            if project.name in seen:
                raise _invalid("duplicate_name", f"duplicate project name {project.name!r}")
            seen.add(project.name)
        return value

    @property
    def source(self) -> Path | None:
        """The file this portfolio was loaded from (None if built in memory)."""
        return self._source

    def project(self, name: str) -> ProjectConfig:
        """The project called ``name``; ConfigError naming the known ones if absent."""
        for project in self.projects:
            if project.name == name:
                return project
        known = ", ".join(sorted(p.name for p in self.projects)) or "(none)"
        where = self._source or "the portfolio"
        raise ConfigError(f"unknown project {name!r} in {where}; known: {known}")

    @property
    def agent_pool(self) -> str:
        """Name of the Prefect global concurrency limit of ``max_total_workers`` agent slots."""
        return f"orch-agents-{slug(self.name) or 'default'}"

    def webhook_for(self, project: ProjectConfig) -> str | None:
        """Where ``project``'s notices go: its own webhook, else the portfolio's."""
        return project.webhook_url or self.webhook_url

    @property
    def results_dir(self) -> Path:
        """Where Prefect persists step results (shared by all projects)."""
        return self.data_dir / "results"

    def retention_for(self, project: ProjectConfig) -> int:
        """Days ``project`` keeps finished cycles' leftovers (0 = forever)."""
        return self.retention_days if project.retention_days is None else project.retention_days

    def enabled_projects(self) -> list[ProjectConfig]:
        """Enabled projects, highest priority (lowest number) first, then by name."""
        return sorted((p for p in self.projects if p.enabled), key=lambda p: (p.priority, p.name))


def slug(name: str) -> str:
    """``name`` in lowercase letters, digits and dashes: what Prefect's limit and artifact keys allow."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def portfolio_from_dict(data: dict[str, Any], source: Path) -> PortfolioConfig:
    """Validate a parsed portfolio as if it had been read from ``source``.

    Relative paths resolve against ``source``'s directory. Any validation
    failure becomes one ConfigError line naming the file and the field.
    """
    source = Path(source).expanduser().absolute()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a JSON object, not {json_type(data)}")
    try:
        portfolio = PortfolioConfig.model_validate(data, context={"base_dir": source.parent})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc, data)}") from exc
    portfolio._source = source
    return portfolio
