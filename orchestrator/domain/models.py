"""Domain models passed between the core, the Prefect tasks and the store.

Every model here is a plain pydantic model so it pickles into Prefect's
persisted results and hashes into nothing surprising.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field


def utcnow() -> str:
    """Current UTC time as an ISO-8601 string (what the store keeps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_id() -> str:
    """A short random id for tasks and cycles (12 hex digits)."""
    return uuid.uuid4().hex[:12]


class TaskType(StrEnum):
    """What kind of change a task asks for; picks the worker's prompt."""

    code = "code"
    test = "test"
    fix = "fix"
    review = "review"


class TaskStatus(StrEnum):
    """Where a task is in its life."""

    pending = "pending"
    in_progress = "in_progress"
    in_review = "in_review"  # its pull request is open; done when it merges
    done = "done"
    failed = "failed"
    blocked = "blocked"  # a task it depends on failed for good; pending again once that one is retried


class CycleStatus(StrEnum):
    """Where a cycle is, or how it ended (also what a run that did no cycle says, in its summary)."""

    running = "running"
    done = "done"
    failed = "failed"
    waiting = "waiting"  # for approval: the cycle stays open, its work kept
    rejected = "rejected"  # by its approver
    skipped = "skipped"  # paused project, finished cycle, or nothing to continue: no cycle ran
    busy = "busy"  # another cycle of the project holds its lock: no cycle ran
    budget = "budget"  # not even one agent session fits the budget: nothing planned or claimed
    rate_limited = "rate_limited"  # the model API's limit holds until its reset: no session starts


class TaskWait(StrEnum):
    """Why a pending task's paid-for work waits; it keeps its worktree meanwhile."""

    merge = "merge"  # its passing branch could not reach main yet
    budget = "budget"  # it waits for budget to be judged or merged
    api = "api"  # its worker's or reviewer's session met API faults past its retries: resumed later


class ApprovalStage(StrEnum):
    """Where a cycle's approval gate stands (``require_approval``)."""

    plan = "plan"  # before workers start
    merge = "merge"  # before passing branches merge or become pull requests


class ApprovalStatus(StrEnum):
    """Where an approval request is; the first decision stands."""

    waiting = "waiting"
    approved = "approved"
    rejected = "rejected"


class Role(StrEnum):
    """Agent roles; each has its own prompt, model and tool list."""

    planner = "planner"
    worker = "worker"
    judge = "judge"
    resolver = "resolver"


def fingerprint(title: str, description: str) -> str:
    """Identity of a task's content, insensitive to case and spacing.

    Used to refuse a failed task that the planner emits again unchanged.
    """
    norm = " ".join(re.sub(r"\s+", " ", f"{title}\n{description}").lower().split())
    return hashlib.sha256(norm.encode()).hexdigest()[:16]


class Task(BaseModel):
    """One unit of work, as the store keeps it."""

    id: str = Field(default_factory=new_id)
    title: str
    description: str = ""
    type: TaskType = TaskType.code
    priority: int = 3  # 1 is most urgent
    status: TaskStatus = TaskStatus.pending
    attempts: int = 0  # attempts started so far
    max_attempts: int = 3  # the first try plus two retries
    source: str = "planner"  # planner | manual | backlog
    cycle_id: str | None = None  # cycle that created it
    claimed_by: str | None = None  # cycle that holds it while in progress
    branch: str | None = None
    last_failure: str = ""  # the reasons the last attempt failed, shown to the next one
    waiting: TaskWait | None = None
    """Which wait ``last_failure`` tells of, if it tells of one (a new one clears it); on a
    pending task, its finished work waits and keeps its worktree (:func:`keeps_work`)."""
    merge_commit: str | None = None
    backlog_item: str | None = None  # the backlog item it does: "#12" (an issue) or a backlog file item id
    backlog_done: bool = False  # the item was closed or ticked after the merge
    pr_number: int | None = None
    pr_url: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    """Ids of the tasks that must be done (merged) before this one is claimed."""
    ci_fixes: int = 0  # rounds its worker spent on CI failures of its pull request
    ci_seen_sha: str = ""  # the pull request head whose CI failure was last acted on (once per head)
    review_rounds: int = 0  # rounds its worker spent on review comments of its pull request
    review_seen: list[int] = Field(default_factory=list)  # ids of reviews and comments already read
    review_replies: list[int] = Field(default_factory=list)
    """Comments to answer once the round is pushed: a line comment's id, or a review's id negated
    (a review is answered in the pull request's conversation)."""
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.title, self.description)

    @property
    def on_pull_request(self) -> bool:
        """Whether its next attempt goes on top of its open pull request (a CI or review round)."""
        return self.pr_number is not None and bool(self.ci_fixes or self.review_rounds)


MERGE_WAITED = "merge waited: "
"""How the last failure of a task whose passing branch could not reach main yet begins."""

BUDGET_WAITED = "budget waited: "
"""How the last failure of a task whose finished work waits for budget begins."""

API_WAITED = "API failed: "
"""How the last failure of a task whose session the model API kept failing begins."""


def keeps_work(task: Task) -> bool:
    """Whether a pending task keeps its worktree: its paid-for work waits for main, budget or the API."""
    return task.status is TaskStatus.pending and task.waiting is not None


class Wait(BaseModel):
    """Why a task's finished work waits (a :class:`TaskWait`), in words."""

    kind: TaskWait
    reason: str

    @property
    def mark(self) -> str:
        """What the task's ``last_failure`` says: the reason after its kind's words."""
        words = {TaskWait.merge: MERGE_WAITED, TaskWait.budget: BUDGET_WAITED, TaskWait.api: API_WAITED}
        return words[self.kind] + self.reason


class PlannedTask(BaseModel):
    """A task as the planner proposes it (its structured output)."""

    title: str = Field(min_length=3, max_length=120)
    description: str = Field(min_length=1)
    type: TaskType
    priority: int = Field(default=3, ge=1, le=5)
    backlog_item: str | None = Field(
        default=None, description="Id of the backlog item this task does, as listed; null if none."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Titles of tasks in this plan, or ids of open tasks, that must merge before this one starts.",
    )


class PlanOutput(BaseModel):
    """The planner's structured output: tasks plus the plan document's parts."""

    findings: str = Field(description="What the planner found in the code and backlog.")
    lessons: str = Field(
        default="", description="What the recent cycles' merges and rejections teach, and how this plan uses it."
    )
    proposal: str = Field(description="What it proposes for this cycle, and why.")
    deferred: list[str] = Field(default_factory=list, description="Work left for later.")
    risks: list[str] = Field(default_factory=list, description="What could go wrong.")
    tasks: list[PlannedTask] = Field(default_factory=list)


class AgentRun(BaseModel):
    """What one agent session returned."""

    text: str = ""
    structured: dict | None = None
    cost_usd: float = 0.0
    num_turns: int = 0
    duration_s: float = 0.0
    session_id: str = ""


class Plan(BaseModel):
    """Result of the plan step."""

    cycle_id: str
    ran_planner: bool  # False when enough tasks were pending already
    max_tasks: int = 0  # room for new tasks when the planner ran
    output: PlanOutput | None = None
    rejected: list[str] = Field(default_factory=list)  # titles refused, with why
    cost_usd: float = 0.0
    session_id: str = ""
    error: str = ""  # why the planner failed; the cycle still works on pending tasks
    budget_stop: str = ""  # the budget cap that kept the planner from starting
    inputs: str = ""  # a digest of what the planner read (see stages.plan_inputs)
    unchanged: str = ""  # why the planner was not asked: nothing new since its last plan
    backlog_ids: list[str] = Field(default_factory=list)  # the open backlog items the planner was shown
    backlog_depends: dict[str, list[str]] = Field(default_factory=dict)
    """Open items shown that wait for others, with the ids of those (open items, or names of none)."""


class WorkerReport(BaseModel):
    """The worker's structured output."""

    summary: str = Field(description="What was changed and why, in a few sentences.")
    completed: bool = Field(description="False if the task could not be done.")


class ResolverReport(BaseModel):
    """The resolver's structured output."""

    summary: str = Field(description="How the conflicts were resolved, or why they were not.")
    resolved: bool = Field(description="True only if every conflict is resolved.")


class WorkResult(BaseModel):
    """Result of the work step for one task."""

    task_id: str
    cycle_id: str
    attempt: int
    branch: str
    base_commit: str
    commit: str | None = None  # branch head after the orchestrator's commit
    success: bool
    error: str = ""
    summary: str = ""
    diff_stat: str = ""
    files_changed: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
    duration_s: float = 0.0
    num_turns: int = 0
    session_id: str = ""
    budget_stop: str = ""  # the budget cap that kept the worker from starting: no attempt spent
    api_fault: str = ""  # the API kept failing past the session's retries: no attempt spent


class CheckResult(BaseModel):
    """One run of a test or lint command."""

    command: str
    ran: bool  # False when the command could not run (missing, 126/127, timeout)
    passed: bool
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    output: str = ""  # the tail of stdout+stderr
    warnings: int = 0  # non-empty output lines, counted for lint
    failed_tests: list[str] | None = None
    """Ids of the failing tests found in the whole output; None when none could be read."""
    runs: int = 1  # a failing test run is run again (``test_retries``) before it counts
    flaky_tests: list[str] = Field(default_factory=list)
    """Tests that failed on one run and passed on another: they do not count as failing."""
    reused: bool = False
    """Not run: the result kept for the same tree, command and environment (stages.test_runs)."""

    @property
    def flaky(self) -> bool:
        """Failed, then passed when run again (or some of its failing tests did)."""
        return self.runs > 1 and (self.passed or bool(self.flaky_tests))


class Baseline(BaseModel):
    """Test and lint results on the cycle's base commit."""

    commit: str
    tests: CheckResult | None = None
    lint: CheckResult | None = None
    batch: bool = False
    """Branches' tests are not run one by one: the merge tests them together (``test_strategy``)."""


class Review(BaseModel):
    """The judge agent's structured output."""

    approve: bool = Field(description="True only if the change does the task well and safely.")
    reasons: list[str] = Field(default_factory=list, description="Why, one point each.")
    summary: str = Field(default="", description="One-paragraph assessment.")


class Verdict(BaseModel):
    """Result of the judge step for one branch."""

    task_id: str
    cycle_id: str
    attempt: int
    commit: str
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    tests: CheckResult | None = None
    lint: CheckResult | None = None
    scope_warnings: list[str] = Field(default_factory=list)
    review: Review | None = None
    cost_usd: float = 0.0
    session_id: str = ""
    budget_stop: str = ""  # the budget cap that kept the reviewer from starting: judged again later
    api_fault: str = ""  # the API kept failing past the review's retries: judged again later


class PullNotice(BaseModel):
    """Something about a pull request of ours that a person should hear of."""

    task_id: str
    url: str
    needs_human: bool  # CI failed past max_ci_fix_attempts (else: it failed, with on_ci_failure "notify")
    reason: str


class PullSync(BaseModel):
    """What asking GitHub about our open pull requests found."""

    merged: list[str] = Field(default_factory=list)  # task ids
    sent_back: list[str] = Field(default_factory=list)  # task ids whose worker fixes CI failures
    notices: list[PullNotice] = Field(default_factory=list)


class MergeOutcome(BaseModel):
    """Result of the merge step for one cycle."""

    cycle_id: str
    main_before: str
    main_after: str
    merged: dict[str, str] = Field(default_factory=dict)  # task id -> merge commit
    rejected: dict[str, str] = Field(default_factory=dict)  # task id -> reason
    waiting: dict[str, Wait] = Field(default_factory=dict)  # task id -> why it waits, its work kept
    resolved_conflicts: list[str] = Field(default_factory=list)  # task ids
    main_updated: bool = False
    waiting_reason: str = ""  # why main was not advanced, when it was not
    pushed: bool = False
    resolver_costs: dict[str, float] = Field(default_factory=dict)  # session id -> cost
    pulls: dict[str, str] = Field(default_factory=dict)  # task id -> pull request URL (merge_strategy pr)

    @property
    def cost_usd(self) -> float:
        return round(sum(self.resolver_costs.values()), 6)


class CycleSummary(BaseModel):
    """What one cycle did, for the CLI, the demo and the UI."""

    project: str
    cycle_id: str
    status: CycleStatus
    message: str = ""
    planned: list[str] = Field(default_factory=list)
    worked: list[str] = Field(default_factory=list)
    passed: list[str] = Field(default_factory=list)
    rejected: dict[str, str] = Field(default_factory=dict)
    merged: list[str] = Field(default_factory=list)
    cost_by_role: dict[str, float] = Field(default_factory=dict)

    @property
    def total_cost_usd(self) -> float:
        return round(sum(self.cost_by_role.values()), 6)
