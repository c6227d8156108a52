"""The store's records of cycles, approval requests and the project itself.

The store hands these out instead of rows: JSON columns are decoded once,
there (see ``Store._cycle``), and statuses are the enums of :mod:`.models`,
which compare and serialize as the strings the database holds. Tasks and
their results are models of :mod:`.models` already.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from orchestrator.domain.models import ApprovalStage, ApprovalStatus, CycleStatus, CycleSummary


class Cycle(BaseModel):
    """One cycle of a project, as the store keeps it (a row of ``cycles``)."""

    id: str
    status: CycleStatus
    base_commit: str
    """The main commit the cycle planned and worked from."""
    started_at: str
    finished_at: str | None = None  # None while running (or waiting for approval)
    plan_path: str = ""  # the plan document in the audit trail, once planned
    planned: list[str] = Field(default_factory=list)
    """Ids of the tasks its planner added."""
    claimed: list[str] | None = None
    """Ids of the tasks it works on; None until it claimed (it is still planning), [] if none."""
    cost_usd: float = 0.0  # set when it finishes; agent_costs knows the cost so far
    session_id: str = ""  # the planner's session
    summary: CycleSummary | None = None
    """What it did, written when it finishes; None while it runs."""
    message: str = ""
    flow_run_id: str = ""  # the Prefect flow run that holds it now
    slot_waiting: int = 0  # its agent sessions waiting for a slot of the portfolio's cap right now
    slot_waits: int = 0  # its sessions that had to wait for one
    slot_wait_s: float = 0.0  # their waits, added up


class Approval(BaseModel):
    """A cycle's request for approval of one stage, and its decision once made."""

    cycle_id: str
    stage: ApprovalStage
    status: ApprovalStatus
    requested_at: str
    deadline: str
    """ISO UTC time after which ``default`` decides it."""
    default: Literal["approve", "reject"]  # the project's approval_default when it was requested
    reason: str = ""
    decided_by: str = ""  # "orch approve", "Prefect UI", "timeout", ...
    decided_at: str | None = None
    flow_run_id: str = ""  # the run that waits for it (suspended, when it has a deployment)


class ProjectState(BaseModel):
    """What the store knows of the project as a whole: pause, failure streak, last cycle, budget."""

    name: str
    paused: bool = False
    paused_reason: str = ""
    consecutive_failures: int = 0
    """Tasks that failed for good since the last success (see ``max_consecutive_failures``)."""
    last_cycle_id: str | None = None  # the last cycle that finished
    last_cycle_at: str | None = None
    budget_stop: str = ""  # which cap stopped the work, and when it resets ('' when none)
    budget_resets_at: str | None = None
    rate_limited_until: str | None = None
    """The model API's rate or usage limit resets then (ISO, UTC): no session starts before."""
    rate_limit_reason: str = ""
    collected_through: str | None = None
    """Retention is done with the cycles that finished until then (those after may still hold something)."""
    flaky_on_main: list[str] = Field(default_factory=list)
    """Tests that failed on the last cycle's base and passed when run again."""
    flaky_on_main_commit: str = ""
    planned_inputs: str = ""
    """A digest of what the planner read for its last plan (see ``stages.plan_inputs``)."""
    planned_at: str | None = None
    found_work_at: str | None = None
    """When a cycle last claimed a task to work on."""
    updated_at: str | None = None


class MergeRecord(BaseModel):
    """A branch merged into main by a cycle (a row of ``merges``)."""

    cycle_id: str
    task_id: str
    commit: str
    """The merge commit on main."""
    resolved_conflict: bool = False
    """Whether the resolver agent settled a conflict on the way."""
    created_at: str


class CostRow(BaseModel):
    """Recorded agent cost of one role and model on one UTC day."""

    role: str
    model: str
    day: str
    """``YYYY-MM-DD``, the date of the sessions' ``created_at``."""
    cost_usd: float
    sessions: int
