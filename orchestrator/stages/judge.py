"""The judge stage: a secret scan, automated checks, then an AI review with the evidence.

A branch that adds a secret (see :mod:`orchestrator.adapters.secret_scan`) is rejected first: its
tests do not run and no reviewer sees it. The checks fail closed. Tests that
pass on the base and fail on the branch reject the branch whatever the
reviewer says; when the base fails too, the failing tests are compared by
id, and any new one rejects the branch (as do failures that cannot be told
apart); a test command that cannot run is a failure; lint that was clean on
the base and fails on the branch is a failure. Tests are run again before
they reject a branch or count as failing on the base: a test that fails, then
passes, is flaky (kept in the verdict, and for the base in the project's
state) and rejects nothing. The reviewer cannot overrule the checks. Checks
that outlast :data:`HEAD_START_S` are reviewed meanwhile (``review_while_testing``):
the reviewer reads their outcome through a tool that waits for them, and is
stopped at its next step, its cost so far recorded, when they fail. Otherwise
only a branch through the checks is shown to it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio

from orchestrator.adapters.agent import AgentSpec, WaitTool, run_agent
from orchestrator.adapters.checks import confirmed, flaky_names, run_check, tail
from orchestrator.adapters.prompts import task_text, untrusted
from orchestrator.adapters.secret_scan import known_secrets, scan_branch, secret_reason
from orchestrator.domain.errors import AgentError, BudgetReached
from orchestrator.domain.models import (
    Baseline,
    CheckResult,
    Review,
    Role,
    Task,
    Verdict,
    WorkResult,
)
from orchestrator.stages.context import ProjectContext
from orchestrator.stages.test_runs import tested

MAX_FILES = 15  # a small task touching more files than this is worth a look
MAX_LINES = 400


def run_lint(ctx: ProjectContext, cwd: Path, background: bool = False) -> CheckResult | None:
    """The project's lint command in ``cwd`` (None when not configured)."""
    c = ctx.config
    return run_check(c.lint_command, cwd, c.lint_timeout_seconds, background) if c.lint_command else None


def tests_again(ctx: ProjectContext, cwd: Path, tests: CheckResult, background: bool = False) -> CheckResult:
    """A failing test run confirmed by running it again (``test_retries``); see :func:`confirmed`."""
    return confirmed(tests, partial(run_check, tests.command, cwd, ctx.config.test_timeout_seconds, background),
                     ctx.config.test_retries)


def run_tests(ctx: ProjectContext, cwd: Path, confirm: Callable[[CheckResult], bool] = lambda _: True,
              background: bool = False) -> CheckResult | None:
    """The project's tests in ``cwd`` (None when not configured), or the result kept for its tree.

    A failing run is run again when ``confirm`` says its failures would count. A
    ``background`` run is niced (see :func:`run_check`).
    """
    c = ctx.config
    if not c.test_command:
        return None

    def run() -> CheckResult:
        result = run_check(c.test_command, cwd, c.test_timeout_seconds, background)
        return tests_again(ctx, cwd, result, background) if not result.passed and confirm(result) else result

    return tested(ctx, cwd, run)


def tests_ahead(ctx: ProjectContext, cwd: Path, stop: threading.Event) -> CheckResult:
    """The tests of a tree the cycle may ask for later: niced, without a turn, once, until ``stop``.

    Only a pass is kept for the tree (a first failure is not final), so a later
    ask finds it, or waits for it if it is still running (see :func:`tested`).
    The caller has checked that the project has a test command.
    """
    c = ctx.config
    return tested(ctx, cwd, partial(run_check, c.test_command, cwd, c.test_timeout_seconds, True, stop),
                  take_turn=False)


def baseline(ctx: ProjectContext, cycle_id: str, base_commit: str, batch: bool = False) -> Baseline:
    """Test and lint results on the cycle's base commit, computed once per cycle.

    With ``batch`` the tests are left to the merge (it reads main's own failures
    if the batch fails). What is flaky there is kept in the project's state, for
    ``orch status``. They run niced, beside the workers: nothing needs them before
    the first verdict, and at full priority they would slow the agents' CLIs
    starting and the workers' own test runs, which the cycle waits on.
    """
    worktree = ctx.base_worktree(cycle_id, base_commit)
    tests = None if batch else run_tests(ctx, worktree, background=True)
    lint = run_lint(ctx, worktree, background=True)
    if tests is not None:
        ctx.store.set_flaky_on_main(flaky_names(tests), base_commit)
    return Baseline(commit=base_commit, tests=tests, lint=lint, batch=batch)


def failed_checks(base: Baseline, tests: CheckResult | None, lint: CheckResult | None) -> list[str]:
    """Reasons the automated checks reject a branch (empty when they pass)."""
    reasons = []
    if tests is not None:
        if not tests.ran:
            why = "timed out" if tests.timed_out else f"could not run (exit {tests.exit_code})"
            reasons.append(f"test command `{tests.command}` {why}")
        elif not tests.passed:
            if base.tests is None or base.tests.passed:
                reasons.append(f"tests pass on the base but fail on the branch (exit {tests.exit_code})"
                               + (f": {listed(tests.failed_tests)}" if tests.failed_tests else ""))
            else:
                reasons += _new_failures(base.tests, tests)
    if lint is not None:
        if not lint.ran:
            reasons.append(f"lint command `{lint.command}` could not run")
        elif not lint.passed and (base.lint is None or base.lint.passed):
            reasons.append(f"lint passes on the base but fails on the branch ({lint.warnings} lines)")
    return reasons


def _new_failures(base: CheckResult, branch: CheckResult) -> list[str]:
    """Tests fail on the base too: the branch may fail only the tests the base fails."""
    if base.failed_tests is None or branch.failed_tests is None:
        return ["tests fail on the base and on the branch, and the failing tests cannot be told "
                "apart by id: the branch cannot be shown not to break more"]
    new = sorted(set(branch.failed_tests) - set(base.failed_tests))
    if not new:
        return []
    return [f"tests that pass on the base fail on the branch: {listed(new)}"]


def listed(test_ids: list[str], limit: int = 10) -> str:
    return ", ".join(test_ids[:limit]) + (f" and {len(test_ids) - limit} more" if len(test_ids) > limit else "")


def scope_warnings(ctx: ProjectContext, worktree: Path, base_commit: str) -> list[str]:
    """Signs that a change is bigger or riskier than a small task should be."""
    _, files, lines = ctx.repo.diff_summary(worktree, base_commit)
    warnings = []
    if len(files) > MAX_FILES:
        warnings.append(f"touches {len(files)} files (more than {MAX_FILES})")
    if lines > MAX_LINES:
        warnings.append(f"changes {lines} lines (more than {MAX_LINES})")
    deleted = ctx.repo.deleted_files(worktree, base_commit)
    if deleted:
        warnings.append("deletes " + ", ".join(deleted[:10]))
    return warnings


def _evidence(check: CheckResult | None, base: CheckResult | None, name: str) -> str:
    if check is None:
        return f"## {name}\n\nNot configured."
    base_state = "not run" if base is None else ("passed" if base.passed else "failed")
    return (
        f"## {name}: {'passed' if check.passed else 'failed'} (base: {base_state}, "
        f"{check.warnings} output lines vs {base.warnings if base else 0} on the base)\n\n"
        + untrusted(tail(check.output, 2000), f"output of `{check.command}` on the branch (end)")
    )


CHECKS_TOOL = "checks"
CHECKS_EVIDENCE = (f"## Tests and lint\n\nRunning on this branch while you review. Before you answer, call the "
                   f"`{CHECKS_TOOL}` tool: it waits for them to finish and gives you their outcome. If they fail, "
                   "the branch is rejected whatever you answer, and your review is stopped.")
BATCH_EVIDENCE = ("## Tests\n\nNot run on this branch alone: before anything merges, the tests run on "
                  "the passing branches merged together, and a branch that breaks them is sent back.")


def build_prompt(task: Task, diff: str, tests: CheckResult | None, lint: CheckResult | None,
                 base: Baseline, warnings: list[str], checking: bool = False) -> str:
    """The reviewer's user message: the task and all the evidence (``checking``: the checks still run).

    Everything but the orchestrator's own words is data: the task (unless its
    owner wrote it), the check output, and the diff an agent wrote.
    """
    checks = [CHECKS_EVIDENCE] if checking else [
        BATCH_EVIDENCE if base.batch else _evidence(tests, base.tests, "Tests"), _evidence(lint, base.lint, "Lint")]
    return "\n\n".join([
        f"# Review of task {task.id}",
        f"Type: {task.type.value}.",
        task_text(task),
        *checks,
        "## Scope warnings\n\n" + ("\n".join(f"- {w}" for w in warnings) or "None."),
        "## Diff\n\n" + untrusted(f"```diff\n{tail(diff, 30_000)}\n```", "the branch's diff, written by the worker agent"),
    ])


def leaked_secrets(ctx: ProjectContext, work: WorkResult) -> list[str]:
    """Why the branch may go no further because it adds a secret (empty when it adds none)."""
    head = work.commit or ctx.repo.head_of(ctx.repo.worktree_path(work.task_id))
    findings = scan_branch(ctx.repo, work.base_commit, head, known_secrets(ctx.portfolio, ctx.config))
    return [secret_reason(findings, "the branch adds")] if findings else []


async def judge(ctx: ProjectContext, task: Task, work: WorkResult, base: Baseline) -> Verdict:
    """Judge one worker's branch in its worktree."""
    worktree = ctx.repo.worktree_path(task.id)
    verdict = Verdict(task_id=task.id, cycle_id=work.cycle_id, attempt=work.attempt,
                      commit=work.commit or "", passed=False)
    # First, and every time (the secrets known may have changed since a verdict that waited):
    # a secret stops the branch before its tests run it or a reviewer is shown it.
    leaks = await anyio.to_thread.run_sync(leaked_secrets, ctx, work)
    if leaks:
        return verdict.model_copy(update={"reasons": leaks})
    previous = ctx.store.verdict(task.id, work.attempt)
    if previous is not None and previous.passed and previous.commit == work.commit:
        # Judged and passed before its merge had to wait: the same commit needs no new review.
        return previous.model_copy(update={"cycle_id": work.cycle_id})
    warnings = await anyio.to_thread.run_sync(scope_warnings, ctx, worktree, work.base_commit)  # git
    verdict = verdict.model_copy(update={"scope_warnings": warnings})
    c = ctx.config
    checks = BranchChecks(ctx, worktree, base)
    overlap = c.review_while_testing and not base.batch and bool(c.test_command or c.lint_command)
    async with anyio.create_task_group() as group:
        group.start_soon(checks.run)
        with anyio.move_on_after(HEAD_START_S if overlap else None):
            await checks.done.wait()
        if checks.done.is_set():
            return await _after_checks(ctx, task, work, base, verdict, checks)
        tool = WaitTool(CHECKS_TOOL, "Wait for the branch's tests and lint to finish; returns their outcome.",
                        checks.outcome)
        reviewed = await _review(ctx, task, work, base, verdict, tool, checks.failed)
    tests, lint = checks.results
    if reasons := failed_checks(base, tests, lint):  # final, whatever the review said or what cut it short
        return reviewed.model_copy(update={"tests": tests, "lint": lint, "reasons": reasons, "passed": False,
                                           "api_fault": "", "budget_stop": ""})
    return reviewed.model_copy(update={"tests": tests, "lint": lint})


HEAD_START_S = 3.0
"""Checks that end within this long (about a CLI's start-up and one model response) are waited
for before the review starts: reviewing meanwhile would gain nothing, and a reviewer would pay
one more response to read their outcome."""


class BranchChecks:
    """A branch's tests (unless the merge tests a batch) and lint, run beside its review."""

    def __init__(self, ctx: ProjectContext, worktree: Path, base: Baseline) -> None:
        self.ctx, self.worktree, self.base = ctx, worktree, base
        self.done = anyio.Event()
        self.results: tuple[CheckResult | None, CheckResult | None] = (None, None)

    async def run(self) -> None:
        """In threads: judges of several branches run their tests at the same time. A failing run
        is run again before its failures reject the branch."""
        ctx, base = self.ctx, self.base
        tests = None if base.batch else await anyio.to_thread.run_sync(
            run_tests, ctx, self.worktree, lambda t: bool(failed_checks(base, t, None)))
        self.results = (tests, await anyio.to_thread.run_sync(run_lint, ctx, self.worktree))
        self.done.set()

    async def outcome(self) -> str:
        """What the reviewer is told once they are done."""
        await self.done.wait()
        tests, lint = self.results
        return _evidence(tests, self.base.tests, "Tests") + "\n\n" + _evidence(lint, self.base.lint, "Lint")

    def failed(self) -> str:
        """Why the review should stop ('' while the checks run or once they passed)."""
        return "the branch's checks failed" if self.done.is_set() and failed_checks(self.base, *self.results) else ""


async def _after_checks(ctx: ProjectContext, task: Task, work: WorkResult, base: Baseline, verdict: Verdict,
                        checks: BranchChecks) -> Verdict:
    """The verdict of a branch whose checks are done: rejected by them, or reviewed with their output."""
    tests, lint = checks.results
    verdict = verdict.model_copy(update={"tests": tests, "lint": lint})
    reasons = failed_checks(base, tests, lint)
    if reasons:  # the reviewer cannot overrule the checks, so do not pay for it
        return verdict.model_copy(update={"reasons": reasons})
    return await _review(ctx, task, work, base, verdict)


def _review_spec(ctx: ProjectContext, task: Task, work: WorkResult) -> AgentSpec:
    spec = ctx.agent_spec(
        Role.judge, ctx.repo.worktree_path(task.id), cycle_id=work.cycle_id, task_id=task.id,
        attempt=work.attempt, output_model=Review,
    )
    previous = ctx.store.verdict(task.id, work.attempt)
    if previous is not None and previous.api_fault and previous.session_id:
        spec = replace(spec, session_id=previous.session_id)  # the API cut this review: go on with it
    return spec


async def _review(ctx: ProjectContext, task: Task, work: WorkResult, base: Baseline, verdict: Verdict,
                  checking: WaitTool | None = None, stop: Callable[[], str] | None = None) -> Verdict:
    """Ask the AI reviewer about a branch that passed the checks, or (``checking``) whose checks still run."""
    worktree = ctx.repo.worktree_path(task.id)
    tests, lint, warnings = verdict.tests, verdict.lint, verdict.scope_warnings
    spec = _review_spec(ctx, task, work)
    if checking is not None:  # its session lasts as long as the checks, too
        c = ctx.config
        spec = replace(spec, wait_tool=checking, stop=stop, timeout_s=spec.timeout_s + c.lint_timeout_seconds
                       + c.test_timeout_seconds * (c.test_retries + 1))
    diff = await anyio.to_thread.run_sync(ctx.repo.diff_text, worktree, work.base_commit)
    prompt = build_prompt(task, diff, tests, lint, base, warnings, checking is not None)
    try:
        run = await run_agent(spec, prompt)
    except BudgetReached as exc:  # the work stands; it is judged when the budget allows
        return verdict.model_copy(update={"reasons": [f"not reviewed: {exc}"], "budget_stop": str(exc)})
    except AgentError as exc:
        return verdict.model_copy(update={
            "reasons": [f"review failed: {exc}"], "cost_usd": exc.cost_usd,
            "session_id": exc.session_id or "", "api_fault": str(exc) if exc.transient else "",
        })
    review = Review.model_validate(run.structured)
    reasons = list(review.reasons) if not review.approve else []
    return verdict.model_copy(update={
        "passed": review.approve, "reasons": reasons or ([] if review.approve else ["rejected by the reviewer"]),
        "review": review, "cost_usd": run.cost_usd, "session_id": run.session_id,
    })
