"""The readable audit trail under each project's ``.orch/`` folder.

Every writer renders a whole file and replaces it atomically, so replaying a
step rewrites the same file instead of appending to it, and a crash never
leaves half a record.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.adapters.checks import flaky_names
from orchestrator.adapters.secrets import redact
from orchestrator.domain.models import (
    CheckResult,
    MergeOutcome,
    PlanOutput,
    Task,
    TaskStatus,
    Verdict,
    WorkResult,
)


def write_atomic(path: Path, content: str) -> Path:
    """Write ``content`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(redact(content), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _bullets(items: list[str], empty: str = "None.") -> str:
    return "\n".join(f"- {item}" for item in items) if items else empty


def plan_markdown(cycle_id: str, output: PlanOutput, accepted: list[Task], rejected: list[str], history: str = "") -> str:
    tasks = "\n".join(
        f"{i}. **{t.title}** (`{t.id}`, {t.type.value}, priority {t.priority}"
        f"{f', backlog item `{t.backlog_item}`' if t.backlog_item else ''}"
        f"{', after ' + ', '.join(f'`{d}`' for d in t.depends_on) if t.depends_on else ''}"
        f"{', blocked: a task it comes after failed' if t.status is TaskStatus.blocked else ''})"
        f"\n\n   {t.description}"
        for i, t in enumerate(accepted, 1)
    )
    return f"""# Plan for cycle {cycle_id}

## What the planner found

{output.findings}

## Learned from recent cycles

{output.lessons.strip() or "The planner drew no lesson from them."}

<details><summary>What the recent cycles did, as the planner was told</summary>

{history or "Nothing yet."}

</details>

## What it proposes

{output.proposal}

## Tasks

{tasks or "None."}

## Deferred

{_bullets(output.deferred)}

## Risks

{_bullets(output.risks)}

## Refused by the orchestrator

{_bullets(rejected)}
"""


def write_failed_plan(orch_dir: Path, cycle_id: str, error: str) -> Path:
    text = f"""# Plan for cycle {cycle_id}

The planner failed: {error}

No task was added. Tasks already pending are worked on as usual.
"""
    return write_atomic(orch_dir / "plans" / f"cycle_{cycle_id}.md", text)


def write_plan(orch_dir: Path, cycle_id: str, output: PlanOutput, accepted: list[Task], rejected: list[str],
               history: str = "") -> Path:
    text = plan_markdown(cycle_id, output, accepted, rejected, history)
    return write_atomic(orch_dir / "plans" / f"cycle_{cycle_id}.md", text)


def worker_markdown(task: Task, result: WorkResult) -> str:
    outcome = "completed" if result.success else f"failed: {result.error}"
    files = _bullets([f"`{f}`" for f in result.files_changed])
    return f"""# Worker report: {task.title}

- Task: `{task.id}` ({task.type.value}), attempt {result.attempt}, cycle `{result.cycle_id}`
- Branch: `{result.branch}` from `{result.base_commit[:12]}`, head `{(result.commit or "none")[:12]}`
- Outcome: {outcome}
- Cost: ${result.cost_usd:.4f}, {result.num_turns} turns, {result.duration_s:.1f}s
- Session: `{result.session_id}`

## Summary

{result.summary or "(none)"}

## Files changed

{files}

## Diff stat

```
{result.diff_stat.strip() or "(no changes)"}
```
"""


def write_worker(orch_dir: Path, task: Task, result: WorkResult) -> Path:
    return write_atomic(orch_dir / "workers" / f"{task.id}.md", worker_markdown(task, result))


def _check_section(title: str, check: CheckResult | None, absent: str = "Not configured.") -> str:
    if check is None:
        return f"## {title}\n\n{absent}\n"
    state = "passed" if check.passed else ("could not run" if not check.ran else "failed")
    runs = f", the last of {check.runs} runs" if check.runs > 1 else ""
    runs += " (reused: this tree was tested before with the same command and environment)" if check.reused else ""
    flaky = f"\nFlaky (failed, then passed when run again): {', '.join(flaky_names(check))}\n" if check.flaky else ""
    return f"""## {title}: {state}

`{check.command}` exit {check.exit_code}, {check.duration_s:.1f}s{runs}
{flaky}
```
{check.output.strip()}
```
"""


def verdict_markdown(task: Task, verdict: Verdict, tests_absent: str = "Not configured.") -> str:
    review = verdict.review
    review_text = (
        f"{'Approved' if review.approve else 'Rejected'}: {review.summary}\n\n{_bullets(review.reasons)}"
        if review else "Not run (the automated checks had already failed)."
    )
    return f"""# Verdict: {task.title}

- Task: `{task.id}`, attempt {verdict.attempt}, cycle `{verdict.cycle_id}`, commit `{verdict.commit[:12]}`
- Result: **{"PASS" if verdict.passed else "FAIL"}**
- Review cost: ${verdict.cost_usd:.4f}

## Reasons

{_bullets(verdict.reasons)}

## Scope warnings

{_bullets(verdict.scope_warnings)}

{_check_section("Tests", verdict.tests, tests_absent)}
{_check_section("Lint", verdict.lint)}
## Review

{review_text}
"""


def write_verdict(orch_dir: Path, task: Task, verdict: Verdict, tests_absent: str = "Not configured.") -> Path:
    """``tests_absent``: what the Tests section says when the verdict has no test run."""
    return write_atomic(orch_dir / "verdicts" / f"{task.id}.md", verdict_markdown(task, verdict, tests_absent))


def merge_markdown(outcome: MergeOutcome, titles: dict[str, str]) -> str:
    merged = _bullets([f"{titles.get(t, t)} (`{t}`) as `{c[:12]}`" for t, c in outcome.merged.items()])
    rejected = _bullets([f"{titles.get(t, t)} (`{t}`): {r}" for t, r in outcome.rejected.items()])
    waiting = _bullets([f"{titles.get(t, t)} (`{t}`): {w.mark}" for t, w in outcome.waiting.items()])
    pulls = _bullets([f"{titles.get(t, t)} (`{t}`): {url}" for t, url in outcome.pulls.items()])
    main = (
        f"main moved from `{outcome.main_before[:12]}` to `{outcome.main_after[:12]}`"
        if outcome.main_updated else f"main stays at `{outcome.main_before[:12]}`: {outcome.waiting_reason or 'nothing to merge'}"
    )
    return f"""# Merges of cycle {outcome.cycle_id}

{main}{" and was pushed" if outcome.pushed else ""}.

## Merged

{merged}

## Not merged

{rejected}

## Waiting, their work kept

{waiting}

## Pull requests opened

{pulls}

## Conflicts resolved by the resolver

{_bullets(outcome.resolved_conflicts)}
"""


def write_merge(orch_dir: Path, outcome: MergeOutcome, titles: dict[str, str]) -> Path:
    return write_atomic(orch_dir / "merges" / f"cycle_{outcome.cycle_id}.md", merge_markdown(outcome, titles))
