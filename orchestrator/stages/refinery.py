"""The merge stage: passing branches into main, through a tested integration.

Branches are merged into an integration worktree made from main, never in
the user's checkout. A conflict goes to the resolver agent; conflict markers
never get committed. The merged result is scanned for secrets and tested
once as a whole (see :class:`MergeCheck`); only if that fails does a binary
search over the merges find the branch that fails it (see :func:`_bisect`),
so what reaches main adds no secret and has passed the tests as merged, and
N passing branches cost one test run, not N. Main then moves by fast-forward
only (see :meth:`GitRepo.advance_main <orchestrator.adapters.git_repo.GitRepo.advance_main>`), and is pushed only after.
"""

from __future__ import annotations

import threading
from functools import cached_property
from pathlib import Path

import anyio

from orchestrator.adapters.agent import run_agent
from orchestrator.adapters.prompts import task_text
from orchestrator.adapters.secret_scan import known_secrets, scan_branch, secret_reason
from orchestrator.domain.errors import AgentError, BudgetReached, GitError
from orchestrator.domain.models import (
    CheckResult,
    MergeOutcome,
    ResolverReport,
    Role,
    Task,
    TaskWait,
    Wait,
    WorkResult,
)
from orchestrator.stages.backlog import tick_item
from orchestrator.stages.context import ProjectContext
from orchestrator.stages.judge import listed, run_tests, tests_again, tests_ahead
from orchestrator.stages.test_runs import tested


def integration_name(cycle_id: str) -> str:
    return f"integration-{cycle_id}"


async def _resolve(
    ctx: ProjectContext, worktree: Path, task: Task, conflicts: list[str], cycle_id: str,
    outcome: MergeOutcome,
) -> str | None:
    """Ask the resolver to fix conflicts; returns why it failed, or None. Its cost goes on ``outcome``."""
    spec = ctx.agent_spec(
        Role.resolver, worktree, cycle_id=cycle_id, task_id=task.id, attempt=task.attempts,
        output_model=ResolverReport,
    )
    prompt = "\n".join([
        f"# Resolve the merge of task {task.id}",
        "", task_text(task), "", "## Conflicted files", "",
        *[f"- {path}" for path in conflicts],
    ] + ([f"\nThe project's test command is `{ctx.config.test_command}`."] if ctx.config.test_command else []))
    try:
        run = await run_agent(spec, prompt)
    except AgentError as exc:
        outcome.resolver_costs[exc.session_id or spec.session_id or ""] = exc.cost_usd
        if exc.transient:  # the API's fault (or its rate limit), not the resolver's: the merge waits
            raise
        return f"conflict in {', '.join(conflicts)}; resolver failed: {exc}"
    outcome.resolver_costs[run.session_id] = run.cost_usd
    report = ResolverReport.model_validate(run.structured)
    left = ctx.repo.conflict_markers(worktree, conflicts)
    if not report.resolved or left:
        why = f"markers left in {', '.join(left)}" if left else report.summary
        return f"conflict in {', '.join(conflicts)} not resolved: {why}"
    return None


async def _merge_all(
    ctx: ProjectContext, worktree: Path, cycle_id: str, candidates: list[tuple[Task, WorkResult]],
    outcome: MergeOutcome,
) -> None:
    """Merge each candidate into the integration worktree, resolving conflicts."""
    for task, work in candidates:
        message = _merge_message(task, work, cycle_id)
        conflicts = await anyio.to_thread.run_sync(ctx.repo.merge_branch, worktree, work.branch, message)
        if conflicts:
            try:
                failure = await _resolve(ctx, worktree, task, conflicts, cycle_id, outcome)
            except (BudgetReached, AgentError) as exc:  # the branch passed; it merges when the resolver can run
                await anyio.to_thread.run_sync(ctx.repo.abort_merge, worktree)
                kind = TaskWait.budget if isinstance(exc, BudgetReached) else TaskWait.api
                outcome.waiting[task.id] = Wait(kind=kind, reason=f"conflict in {', '.join(conflicts)} waits for the resolver: {exc}")
                continue
            if failure:
                await anyio.to_thread.run_sync(ctx.repo.abort_merge, worktree)
                outcome.rejected[task.id] = failure
                continue
            outcome.resolved_conflicts.append(task.id)
            await anyio.to_thread.run_sync(ctx.repo.conclude_merge, worktree)
        outcome.merged[task.id] = await anyio.to_thread.run_sync(_ticked_head, ctx, worktree, task)


def _merge_message(task: Task, work: WorkResult, cycle_id: str) -> str:
    return f"Merge {work.branch}: {task.title}\n\norchestrator task {task.id}, cycle {cycle_id}"


def ahead_name(cycle_id: str) -> str:
    return f"ahead-{cycle_id}"


def merged_tests_ahead(ctx: ProjectContext, cycle_id: str, candidates: list[tuple[Task, WorkResult]],
                       stop: threading.Event) -> None:
    """Test, niced and ahead of the merge, the result it will build if every candidate passes its judge.

    The merge builds the same merges from the same commits, so the same tree: its
    test run then finds this one's pass kept (see :func:`~orchestrator.stages.test_runs.tested`),
    and the suite runs while the reviewers read rather than after them. A
    conflict stops it (a resolver's answer cannot be foreseen), as does ``stop``:
    the cycle sets it when the merge will build something else. Git and the tests
    only; in a thread.
    """
    c = ctx.config
    if not (c.test_command and c.test_cache and candidates) or c.merge_strategy == "pr":
        return
    name = ahead_name(cycle_id)
    worktree = ctx.repo.add_worktree(name, ctx.branch(name), ctx.repo.head())  # as the merge will start
    try:
        for task, work in candidates:
            if stop.is_set() or ctx.repo.merge_branch(worktree, work.branch, _merge_message(task, work, cycle_id)):
                return
            _ticked_head(ctx, worktree, task)
        tests_ahead(ctx, worktree, stop)
    except GitError:
        if not ctx.repo.branch_exists(work.branch):
            return  # its judge rejected it meanwhile, and its branch went: the merge will build something else
        raise
    finally:
        ctx.repo.remove_worktree(name, ctx.branch(name))


def _ticked_head(ctx: ProjectContext, worktree: Path, task: Task) -> str:
    """The merge's commit, with the task's backlog item ticked in it (git and files only)."""
    if tick_item(ctx, worktree, task):  # the backlog's tick is part of the merge main receives
        ctx.repo.commit_all(worktree, "", amend=True)
    return ctx.repo.head_of(worktree)


class MergedTests:
    """The test check of a merged result: what main receives must pass as merged.

    Tests main already fails do not block a merge, compared by test id as the
    judge does; main's own failures are read once, and only when a merged
    result fails, from a checkout of main as it was (usually a result kept
    for its tree). A failing run is not run again at once: the search for the
    branch that breaks it runs the tests on parts of the same merges, and a
    step that fails tests an earlier run failed confirms them, as a rerun
    would. Only a failure no other run agreed with is run again before it
    blames a branch (see :meth:`again`), so a flaky test blames none, and
    a branch that breaks the tests is found in 1 + log2(merges) runs.
    """

    def __init__(self, ctx: ProjectContext, cycle_id: str, main_before: str) -> None:
        self.ctx, self.cycle_id, self.main_before = ctx, cycle_id, main_before
        self.failed: list[set[str]] = []  # the tests each failing run failed
        self.doubtful: dict[str, CheckResult] = {}  # head -> a failing run no other run agreed with

    def check(self, worktree: Path) -> tuple[bool, str]:
        """(passes, the end of the test output when it does not)."""
        # Failures not named by test id cannot be matched with another run's: run them again at once.
        return self._judged(worktree, run_tests(self.ctx, worktree, confirm=lambda r: r.failed_tests is None))

    def again(self, worktree: Path) -> tuple[bool, str]:
        """:meth:`check` of a doubtful failure, confirmed by running it again (``test_retries``)."""
        first = self.doubtful.pop(self.ctx.repo.head_of(worktree))
        return self._judged(worktree, tested(self.ctx, worktree, lambda: tests_again(self.ctx, worktree, first)))

    def _judged(self, worktree: Path, result: CheckResult | None) -> tuple[bool, str]:
        if result is None or result.passed:
            return True, ""
        if result.ran and result.failed_tests is not None:
            failing = set(result.failed_tests)
            known = self.main_failures
            if known is not None and failing <= set(known):
                return True, ""
            if result.runs == 1 and not any(failing <= seen for seen in self.failed):
                self.doubtful[self.ctx.repo.head_of(worktree)] = result
            self.failed.append(failing)
            # Named first: on a red base the output's end may show only main's own failures.
            return False, f"{listed(sorted(failing - set(known or ())))}\n{result.output[-500:]}"
        return False, result.output[-500:]

    @cached_property
    def main_failures(self) -> list[str] | None:
        """The tests main fails by itself ([] when green, None when they cannot be told)."""
        name = f"main-{self.cycle_id}"
        path = self.ctx.repo.add_worktree(name, self.ctx.branch(name), self.main_before)
        try:
            result = run_tests(self.ctx, path)
        finally:
            self.ctx.repo.remove_worktree(name, self.ctx.branch(name))
        if result is None:  # no test command: nothing fails
            return []
        return [] if result.passed else (result.failed_tests if result.ran else None)


class MergeCheck:
    """What main may receive: a merged result that adds no secret and passes its tests as merged."""

    def __init__(self, ctx: ProjectContext, cycle_id: str, main_before: str) -> None:
        self.ctx, self.main_before = ctx, main_before
        self.tests = MergedTests(ctx, cycle_id, main_before)
        self.secrets = known_secrets(ctx.portfolio, ctx.config)

    def failure(self, worktree: Path) -> str:
        """Why the merged result in ``worktree`` may not reach main ('' when it may).

        The secret scan comes first: it costs one diff, and a result that adds a
        secret is not worth running. It also catches what no branch's own scan
        could: a branch the judge never saw, or secrets known only since.
        """
        head = self.ctx.repo.head_of(worktree)
        findings = scan_branch(self.ctx.repo, self.main_before, head, self.secrets)
        if findings:
            return secret_reason(findings, "merged with main and the branches before it, the result adds")
        return self._reason(*self.tests.check(worktree))

    def doubtful(self, head: str) -> bool:
        """Whether the failure of ``head`` rests on one test run that no other run agreed with."""
        return head in self.tests.doubtful

    def again(self, worktree: Path) -> str:
        """:meth:`failure` of a doubtful head, its tests run again first."""
        return self._reason(*self.tests.again(worktree))

    @staticmethod
    def _reason(passed: bool, output: str) -> str:
        return "" if passed else f"tests fail once merged with main and the branches before it: {output}"


async def _bisect(
    ctx: ProjectContext, worktree: Path, cycle_id: str, candidates: list[tuple[Task, WorkResult]],
    outcome: MergeOutcome, check: MergeCheck, failure: str,
) -> None:
    """The merged result fails its check: keep the longest passing start of it.

    The merges made one after another form a chain; a binary search over it
    (each step checks the chain up to one merge, reusing its commits, so no
    conflict is resolved twice) finds the first merge that fails the check: one
    that adds a secret or breaks the tests. A failure that rests on a single
    run (no other run failed those tests) is run again before it blames the
    branch; if it passes then, it was flaky and the search goes on above it.
    That branch is sent back; the branches after it are merged again onto the
    passing part and checked once, and searched the same way if that fails.
    """
    chain = list(outcome.merged.items())  # (task id, commit) in merge order
    failing = {len(chain) - 1: failure}  # i -> why chain[:i + 1] fails
    good = -1  # chain[:good + 1] passes
    while True:
        bad = min(i for i in failing if i > good)
        while bad - good > 1:
            middle = (good + bad) // 2
            await anyio.to_thread.run_sync(ctx.repo.reset_worktree_to, worktree, chain[middle][1])
            if why := await anyio.to_thread.run_sync(check.failure, worktree):
                bad, failing[middle] = middle, why
            else:
                good = middle
        if not check.doubtful(chain[bad][1]):
            break
        # Only one run failed there: before it blames a branch, run it again.
        await anyio.to_thread.run_sync(ctx.repo.reset_worktree_to, worktree, chain[bad][1])
        if why := await anyio.to_thread.run_sync(check.again, worktree):
            failing[bad] = why
            break
        good = bad  # a flaky failure: the chain up to here passes
        if good == len(chain) - 1:  # all of it
            return
    failure = failing[bad]
    culprit = chain[bad][0]
    outcome.rejected[culprit] = failure
    outcome.merged = dict(chain[:bad])
    await anyio.to_thread.run_sync(ctx.repo.reset_worktree_to, worktree, chain[good][1] if good >= 0 else outcome.main_before)
    after = {task_id for task_id, _ in chain[bad + 1 :]}
    rest = [(t, w) for t, w in candidates if t.id in after]
    if not rest:
        return
    trial = MergeOutcome(cycle_id=cycle_id, main_before=outcome.main_before, main_after=outcome.main_before)
    await _merge_all(ctx, worktree, cycle_id, rest, trial)
    outcome.resolver_costs.update(trial.resolver_costs)
    outcome.rejected.update(trial.rejected)
    outcome.waiting.update(trial.waiting)
    outcome.resolved_conflicts += [t for t in trial.resolved_conflicts if t not in outcome.resolved_conflicts]
    if not trial.merged:
        return
    failure = await anyio.to_thread.run_sync(check.failure, worktree)
    outcome.merged.update(trial.merged)
    if failure:
        await _bisect(ctx, worktree, cycle_id, rest, outcome, check, failure)


async def merge(ctx: ProjectContext, cycle_id: str, candidates: list[tuple[Task, WorkResult]]) -> MergeOutcome:
    """Merge passing branches, test the result, and advance main if allowed."""
    main_before = ctx.repo.head()
    outcome = MergeOutcome(cycle_id=cycle_id, main_before=main_before, main_after=main_before)
    if not candidates:
        return outcome
    # Git, the merged result's tests (possibly minutes) and the push run off the event loop,
    # where other projects' sessions of the same portfolio run meanwhile.
    name = integration_name(cycle_id)
    worktree = await anyio.to_thread.run_sync(ctx.repo.add_worktree, name, ctx.branch(name), main_before)
    check = MergeCheck(ctx, cycle_id, main_before)
    try:
        await _merge_all(ctx, worktree, cycle_id, candidates, outcome)
        failure = await anyio.to_thread.run_sync(check.failure, worktree) if outcome.merged else ""
        if failure:  # what is left after the search passed the check, or is main as it was
            await _bisect(ctx, worktree, cycle_id, candidates, outcome, check, failure)
        await anyio.to_thread.run_sync(_advance_main, ctx, worktree, outcome)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(ctx.repo.remove_worktree, name, ctx.branch(name))
    return outcome


def _advance_main(ctx: ProjectContext, worktree: Path, outcome: MergeOutcome) -> None:
    """Fast-forward main to the merged result if it may move, and push it (git only)."""
    new_head = ctx.repo.head_of(worktree)
    if new_head == outcome.main_before:
        return
    moved, reason = ctx.repo.advance_main(new_head, outcome.main_before)
    outcome.main_updated, outcome.waiting_reason = moved, reason
    if moved:
        outcome.main_after = new_head
        outcome.pushed = _push(ctx, outcome)


def _push(ctx: ProjectContext, outcome: MergeOutcome) -> bool:
    if not (ctx.config.push and ctx.repo.has_remote()):
        return False
    try:
        ctx.repo.push_main()
    except GitError as exc:
        outcome.waiting_reason = f"main advanced locally but the push failed: {exc}"
        return False
    return True
