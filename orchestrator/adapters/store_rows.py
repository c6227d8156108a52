"""Rows of the store to models and back: where its JSON columns are encoded and decoded.

:class:`.store.Store` hands out only models; it turns every row it reads
with one of these functions, so a column's JSON text, its NULLs and its
legacy forms are dealt with here and nowhere else. Text that came from
outside (task content, results, reasons) is redacted (see :mod:`.secrets`)
on its way in; a new cycle's or approval request's row holds only ids,
times and settings. No ``sqlite_utils`` here: rows are plain dicts.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.adapters.secrets import redact_all
from orchestrator.domain.models import CycleSummary, Task, Verdict, WorkResult, utcnow
from orchestrator.domain.state import Approval, Cycle, ProjectState

# Columns of judge_verdicts that hold a Verdict field as JSON text.
_VERDICT_JSON = ("reasons", "tests", "lint", "scope_warnings", "review")


def plain(value: Any) -> Any:
    """A value as a column holds it: enums as their value, containers as JSON text, no secret."""
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, (dict, list)):
        return json.dumps(redact_all(value))
    return redact_all(value)


def _set(row: dict[str, Any]) -> dict[str, Any]:
    # NULL is "not set": the model's default stands in for it.
    return {k: v for k, v in row.items() if v is not None}


def task_row(task: Task) -> dict[str, Any]:
    """The row of a task, with its content fingerprint (kept for duplicate checks)."""
    row = redact_all(task.model_dump(mode="json"))
    row["fingerprint"] = task.fingerprint
    return row


def task_from(row: dict[str, Any]) -> Task:
    """The task a row of ``tasks`` holds."""
    fields = {k: v for k, v in row.items() if k != "fingerprint"}
    for name in ("depends_on", "review_seen", "review_replies"):  # JSON lists
        fields[name] = json.loads(fields.get(name) or "[]")
    return Task.model_validate(fields)


def cycle_row(cycle: Cycle) -> dict[str, Any]:
    """The row of a cycle: lists as JSON text, '' for a claim not made yet, '{}' for no summary."""
    row = cycle.model_dump(mode="json")
    row["planned"] = json.dumps(row["planned"])
    row["claimed"] = "" if row["claimed"] is None else json.dumps(row["claimed"])
    row["summary"] = json.dumps(row["summary"] or {})
    return row


def cycle_from(row: dict[str, Any]) -> Cycle:
    """The cycle a row of ``cycles`` holds.

    ``claimed`` is '' until the cycle claims (None: still planning) and ``summary``
    is '{}' until it finishes (None); both hold JSON text once set.
    """
    fields = _set(row)
    fields["planned"] = json.loads(fields.get("planned") or "[]")
    fields["claimed"] = json.loads(fields["claimed"]) if fields.get("claimed") else None
    summary = json.loads(fields.get("summary") or "{}")
    fields["summary"] = CycleSummary.model_validate(summary) if summary else None
    return Cycle.model_validate(fields)


def approval_row(approval: Approval) -> dict[str, Any]:
    """The row of an approval request."""
    return approval.model_dump(mode="json")


def approval_from(row: dict[str, Any]) -> Approval:
    """The approval request a row of ``approvals`` holds."""
    return Approval.model_validate(_set(row))


def state_from(row: dict[str, Any]) -> ProjectState:
    """The project state a row of ``project_state`` holds."""
    fields = _set(row)
    fields["flaky_on_main"] = json.loads(fields.get("flaky_on_main") or "[]")
    return ProjectState.model_validate(fields)


def work_row(result: WorkResult) -> dict[str, Any]:
    """The row of a worker's result, stamped now."""
    row = redact_all(result.model_dump(mode="json"))
    row["files_changed"] = json.dumps(row["files_changed"])
    row["created_at"] = utcnow()
    return row


def work_from(row: dict[str, Any]) -> WorkResult:
    """The worker's result a row of ``worker_results`` holds."""
    fields = {k: v for k, v in _set(row).items() if k in WorkResult.model_fields}
    fields["files_changed"] = json.loads(fields.get("files_changed") or "[]")
    return WorkResult.model_validate(fields)


def verdict_row(verdict: Verdict) -> dict[str, Any]:
    """The row of a verdict, stamped now."""
    row = redact_all(verdict.model_dump(mode="json"))
    for key in _VERDICT_JSON:
        row[key] = json.dumps(row[key])
    row["created_at"] = utcnow()
    return row


def verdict_from(row: dict[str, Any]) -> Verdict:
    """The verdict a row of ``judge_verdicts`` holds."""
    fields = {k: v for k, v in _set(row).items() if k in Verdict.model_fields}
    for key in _VERDICT_JSON:
        if key in fields:
            fields[key] = json.loads(fields[key])
    return Verdict.model_validate(fields)
