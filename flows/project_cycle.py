"""The ``project-cycle`` flow: plan, work, judge and merge for one project.

The flow only sequences steps and records what each returned; the work is
in the tasks and the core. It holds the project's lock for the whole cycle
and patrols first (see ``orchestrator.stages.patrol``). A cycle a crash left
unfinished is found in the project's store and re-entered under its own
cycle id, so the cached steps of its first run are reused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import anyio
from prefect import Task as Task_
from prefect import flow, get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.runtime import flow_run

from orchestrator.adapters.checks import flaky_names
from orchestrator.adapters.lock import CycleLock
from orchestrator.adapters.portfolio_file import find_config
from orchestrator.adapters.timing import span
from orchestrator.adapters.webhooks import Event
from orchestrator.domain.config import slug
from orchestrator.domain.models import (
    ApprovalStage,
    Baseline,
    CycleStatus,
    CycleSummary,
    MergeOutcome,
    Task,
    Verdict,
    WorkResult,
)
from orchestrator.stages import (
    approval,
    backlog,
    budget,
    cycle,
    plan_inputs,
    planner,
    rate_limit,
    refinery,
    test_runs,
)
from orchestrator.stages.context import ProjectContext, ProjectRef, in_thread
from tasks.judge import baseline, judge
from tasks.merge import merge, publish
from tasks.patrol import patrol, stop_if_failing, sync
from tasks.plan import plan
from tasks.slots import set_agent_limit
from tasks.work import work

from .approval_gate import ask_approval
from .notices import cycle_ended, notify

T = TypeVar("T")


def artifact_key(kind: str, project: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return f"{kind}-{slug(project)}"


# Runs are named after their project, so the UI's run lists read by project.
@flow(name="project-cycle", flow_run_name="{project}", log_prints=True)
async def project_cycle(
    project: str, config: str | None = None, cycle_id: str | None = None, wait: bool = False
) -> CycleSummary:
    """Run one cycle of ``project`` from the portfolio file ``config``.

    Only one cycle of a project runs at a time: when another holds the
    project, this one does nothing and says so, or waits its turn if ``wait``.
    """
    with span("flow", project):  # the cycle as a user waits for it, for bench/
        return await _guarded_cycle(project, config, cycle_id, wait)


async def _guarded_cycle(project: str, config: str | None, cycle_id: str | None, wait: bool) -> CycleSummary:
    ref = ProjectRef(project=project, config_path=str(find_config(config).resolve()))
    with ProjectContext.open(ref) as ctx:
        return await _open_cycle(ctx, ref, cycle_id, wait)


async def _open_cycle(ctx: ProjectContext, ref: ProjectRef, cycle_id: str | None, wait: bool) -> CycleSummary:
    project = ref.project
    logger = get_run_logger()
    state = ctx.store.state()
    if state.paused:
        message = f"project {project!r} is paused ({state.paused_reason or 'by a user'}): nothing done"
        logger.info(message)
        return CycleSummary(project=project, cycle_id="", status=CycleStatus.skipped, message=message)
    if parked := rate_limit.holds(state, ctx.services.clock()):  # ends at once, and costs nothing
        message = f"project {project!r} is {parked}: nothing done"
        logger.info(message)
        return CycleSummary(project=project, cycle_id="", status=CycleStatus.rate_limited, message=message)
    lock = CycleLock(ctx.portfolio.data_dir, ctx.name)
    if not await anyio.to_thread.run_sync(lock.acquire, wait):
        message = f"a cycle of {project!r} is already running ({lock.holder()}): nothing done"
        logger.warning(message)
        return CycleSummary(project=project, cycle_id="", status=CycleStatus.busy, message=message)
    try:
        waiting = approval.blocking(ctx, str(flow_run.get_id() or ""))
        if waiting is not None:  # nothing else runs until it is decided
            message = approval.describe(waiting)
            logger.info(message)
            return CycleSummary(project=project, cycle_id=waiting.cycle_id, status=CycleStatus.waiting,
                                message=message)
        report = await patrol(ref)
        if report.paused_reason:
            message = f"project {project!r} paused: {report.paused_reason}"
            logger.warning(message)
            await notify(ctx, Event.project_paused, f"Project paused: {report.paused_reason}")
            return CycleSummary(project=project, cycle_id="", status=CycleStatus.skipped, message=message)
        found = await sync(ref)  # pull requests merged, closed or failing CI since; issues still to close
        if found.sent_back:
            logger.info("CI failed on the pull requests of task(s) %s: back to their workers", ", ".join(found.sent_back))
        for notice in found.notices:
            logger.warning("Task %s: %s", notice.task_id, notice.reason)
            event = Event.needs_human if notice.needs_human else Event.ci_failed
            await notify(ctx, event, notice.reason, {"task": notice.task_id}, link=notice.url)
        if not cycle_id and (quiet := await in_thread(ref, plan_inputs.idle)):  # git, maybe GitHub
            logger.info("Project %s: %s", project, quiet)  # no plan step, agent, worktree or cycle
            return CycleSummary(project=project, cycle_id="", status=CycleStatus.skipped, message=quiet)
        return await _locked_cycle(ctx, ref, cycle_id)
    finally:
        lock.release()


async def _locked_cycle(ctx: ProjectContext, ref: ProjectRef, cycle_id: str | None) -> CycleSummary:
    logger = get_run_logger()
    backlog.check_github(ctx.config, ctx.repo)
    if note := await set_agent_limit(ctx.portfolio):
        logger.warning(note)
    start = cycle.begin(ctx, cycle_id, flow_run_id=str(flow_run.get_id() or ""))
    if start is None:
        message = f"cycle {cycle_id} of {ctx.name!r} is finished: nothing to continue"
        logger.info(message)
        return CycleSummary(project=ctx.name, cycle_id=cycle_id or "", status=CycleStatus.skipped, message=message)
    logger.info("%s cycle %s of %s from %s", "Resuming" if start.resumed else "Starting",
                start.cycle_id, ctx.name, start.base_commit[:12])
    before = ctx.store.state()
    try:
        summary = await _run(ctx, ref, start)
    except Exception as exc:
        summary = cycle.summarize(ctx, start.cycle_id, CycleStatus.failed, f"{type(exc).__name__}: {exc}")
        cycle.abandon(ctx, start.cycle_id, summary)
        await cycle_ended(ctx, summary)
        raise
    if summary.status is CycleStatus.waiting:  # for approval: the cycle stays open, its work kept
        return summary
    await in_thread(ref, cycle.finish, summary)  # removes the cycle's base worktree
    await _publish_summary(ctx, summary)
    await cycle_ended(ctx, summary)
    if stop := budget.newly_reached(before, ctx.store.state()):
        await notify(ctx, Event.budget_reached, f"Budget reached: {stop}", {"cycle": summary.cycle_id})
    if limit := rate_limit.newly_parked(before, ctx.store.state()):
        await notify(ctx, Event.rate_limited, f"Model API limit: {limit}", {"cycle": summary.cycle_id})
    reason = await stop_if_failing(ctx)
    if reason:
        logger.warning("Project %s paused: %s", ctx.name, reason)
        await notify(ctx, Event.project_paused, f"Project paused: {reason}")
    return summary


def _step(ctx: ProjectContext, task: Task_) -> Task_:
    """A task with persisted results in the portfolio's result folder.

    Untagged: Prefect asks its server for a tag concurrency slot before every
    tagged task run, and a SQLite server answers asks that come together
    with a 503 the client retries only after 2 s.
    """
    return task.with_options(result_storage=ctx.results_dir, persist_result=True)


class Progress:
    """A progress artifact over the cycle's steps: plan, each worker, each verdict, merge."""

    def __init__(self, ctx: ProjectContext) -> None:
        self.key = artifact_key("progress", ctx.name)
        self.done, self.total = 0, 2
        self.artifact_id: UUID | None = None

    async def start(self) -> None:
        self.artifact_id = await acreate_progress_artifact(0.0, key=self.key, description="Steps done")

    async def expect(self, steps: int) -> None:
        self.total += steps
        await self._show()

    async def step(self) -> None:
        self.done += 1
        await self._show()

    async def finish(self) -> None:
        self.done = self.total
        await self._show()

    async def _show(self) -> None:
        if self.artifact_id is not None:
            await aupdate_progress_artifact(self.artifact_id, round(100 * self.done / self.total, 1),
                                            description=f"{self.done} of {self.total} steps done")


async def _recorded(progress: Progress, step: Awaitable[T], record: Callable[[T], Awaitable[None]], name: str) -> T:
    # Each result is recorded as soon as it is in: the store (and `orch run`'s
    # live line) sees the cycle advance, and one failing step loses no other.
    with span("step", name):
        result = await step
    await record(result)
    await progress.step()
    return result


async def _run(ctx: ProjectContext, ref: ProjectRef, start: cycle.CycleStart) -> CycleSummary:
    cycle_id, base = start.cycle_id, start.base_commit
    if not start.resumed and (reached := ctx.budget(cycle_id).open_cycle()) is not None:
        return cycle.summarize(ctx, cycle_id, CycleStatus.budget, str(reached))
    progress = Progress(ctx)
    await progress.start()
    with span("step", "plan"):
        the_plan = await _step(ctx, plan)(ref, cycle_id, base)
    await progress.step()
    if the_plan.error:
        get_run_logger().warning("The planner failed: %s", the_plan.error)
    plan_file = planner.adopt(ctx, the_plan)
    if plan_file is not None:  # the artifact shows the same document as the audit trail
        await acreate_markdown_artifact(
            key=artifact_key("plan", ctx.name), markdown=plan_file.read_text(),
            description=f"Plan of cycle {cycle_id}",
        )
    if parked := rate_limit.holds(ctx.store.state(), ctx.services.clock()):  # nothing is claimed
        return cycle.summarize(ctx, cycle_id, CycleStatus.rate_limited, parked)
    note = f"planner failed: {the_plan.error}" if the_plan.error else the_plan.budget_stop or the_plan.unchanged
    if approval.asks(ctx, ApprovalStage.plan):
        what = plan_file.read_text() if plan_file is not None else "No new plan: the pending tasks are worked on."
        decision = await ask_approval(ctx, cycle_id, ApprovalStage.plan, what)
        if decision is None:
            return cycle.summarize(ctx, cycle_id, CycleStatus.waiting, _waiting(ctx, cycle_id, ApprovalStage.plan))
        if not decision.approved:
            approval.reject_plan(ctx, cycle_id, decision)
            return cycle.summarize(ctx, cycle_id, CycleStatus.rejected, f"plan rejected ({decision.decided_by}): {decision.reason}")
    tasks = [t for t in cycle.claim(ctx, cycle_id) if cycle.still_held(ctx, cycle_id, t)]
    await progress.expect(2 * len(tasks))
    ahead = TestsAhead(ref, cycle_id)
    try:
        passing = await _work_and_judge(ctx, ref, cycle_id, base, tasks, progress, ahead)
        if approval.asks(ctx, ApprovalStage.merge, len(passing)):
            await ahead.end()  # an approval may take days: the merge's own run tests what is then merged
            decision = await ask_approval(ctx, cycle_id, ApprovalStage.merge, _merge_request(passing))
            if decision is None:
                return cycle.summarize(ctx, cycle_id, CycleStatus.waiting, _waiting(ctx, cycle_id, ApprovalStage.merge))
            if not decision.approved:
                approval.reject_merge(ctx, [t.id for t, _ in passing], decision)
                return cycle.summarize(ctx, cycle_id, CycleStatus.rejected, f"merge rejected ({decision.decided_by}): {decision.reason}")
        if passing:
            ahead.keep_if_merging([t.id for t, _ in passing])
            await _merge(ctx, ref, cycle_id, passing)
    finally:
        await ahead.end()
    await progress.finish()
    return cycle.summarize(ctx, cycle_id, CycleStatus.done, note)


class TestsAhead:
    """The merged result's tests, started once every worker is done (see :func:`refinery.merged_tests_ahead`).

    Started with the branches that worked; the merge's own test run finds its
    pass when every one of them passed its judge, and waits for it if it is
    still running. Stopped when the merge will build something else, and at
    the end of the cycle, which waits for it to be gone.
    """

    def __init__(self, ref: ProjectRef, cycle_id: str) -> None:
        self.ref, self.cycle_id = ref, cycle_id
        self.stop = threading.Event()
        self.task_ids: list[str] = []
        self.running: asyncio.Future[None] | None = None

    def start(self, candidates: list[tuple[Task, WorkResult]]) -> None:
        self.task_ids = [t.id for t, _ in candidates]
        self.running = asyncio.ensure_future(self._test(candidates))

    async def _test(self, candidates: list[tuple[Task, WorkResult]]) -> None:
        with span("step", "ahead"):
            await in_thread(self.ref, refinery.merged_tests_ahead, self.cycle_id, candidates, self.stop)

    def keep_if_merging(self, task_ids: list[str]) -> None:
        if task_ids != self.task_ids:
            self.stop.set()

    async def end(self) -> None:
        self.stop.set()
        if self.running is None:
            return
        [outcome] = await asyncio.gather(self.running, return_exceptions=True)
        if isinstance(outcome, Exception):  # it only saves time: the merge tests for itself
            get_run_logger().warning("Testing the merged result ahead of the merge failed: %s", outcome)


async def _work_and_judge(ctx: ProjectContext, ref: ProjectRef, cycle_id: str, base: str, tasks: list[Task],
                          progress: Progress, ahead: TestsAhead) -> list[tuple[Task, WorkResult]]:
    """Work and judge every task; the tasks whose branches passed, with their work.

    Once every worker is done, ``ahead`` tests what the merge will build if every
    branch that worked passes its judge.
    """
    # Each task goes from its worker straight to its judge; the base's checks
    # run while the workers work, so no step waits for a slower sibling.
    # With a long suite the branches are tested together, at the merge (see test_runs.batch_first).
    batch = test_runs.batch_first(ctx, len(tasks))
    if batch:
        get_run_logger().info("Testing the %d branches together at the merge (test_strategy %s)",
                              len(tasks), ctx.config.test_strategy)
    base_checks = asyncio.ensure_future(_baseline(ctx, ref, cycle_id, base, batch)) if tasks else None
    worker_step, judge_step = _step(ctx, work), _step(ctx, judge)
    worked: dict[str, WorkResult] = {}

    async def work_then_judge(t: Task) -> tuple[WorkResult, Verdict | None]:
        # Recording may remove a worktree (a large tree takes a while): in a thread, as git calls are.
        result = await _recorded(progress, worker_step(ref, cycle_id, base, t),
                                 partial(in_thread, ref, cycle.record_work, t), "work")
        worked[t.id] = result
        if len(worked) == len(tasks):
            ahead.start([(x, worked[x.id]) for x in tasks if worked[x.id].success])
        if not result.success or base_checks is None:
            return result, None
        verdict = await _recorded(progress, judge_step(ref, t, result, await base_checks),
                                  partial(in_thread, ref, cycle.record_verdict, t), "judge")
        return result, verdict

    # Every chain runs to its end before a failure of one fails the cycle: no finished work is lost.
    ends = await asyncio.gather(*[work_then_judge(t) for t in tasks], return_exceptions=True)
    if base_checks is not None:
        await asyncio.gather(base_checks, return_exceptions=True)
    failure = next((e for e in ends if isinstance(e, BaseException)), None)
    if failure is not None:
        raise failure
    chains = [(t, r, v) for t, (r, v) in zip(tasks, ends, strict=True)]  # type: ignore[misc]
    judged = [(t, r) for t, r, v in chains if v is not None]
    verdicts = [v for _, _, v in chains if v is not None]
    if judged:
        await _publish_verdicts(ctx, judged, verdicts)
    return [(t, r) for (t, r), v in zip(judged, verdicts, strict=True) if v.passed]


async def _merge(ctx: ProjectContext, ref: ProjectRef, cycle_id: str, passing: list[tuple[Task, WorkResult]]) -> MergeOutcome:
    """Merge the passing branches into main, or open their pull requests."""
    step = publish if ctx.config.merge_strategy == "pr" else merge
    with span("step", "merge"):
        outcome = await _step(ctx, step)(ref, cycle_id, ctx.repo.head(), passing)
    await in_thread(ref, cycle.record_merge, outcome, [t for t, _ in passing])  # removes the merged worktrees
    await in_thread(ref, backlog.sync_done)  # merged tasks' issues: comment, close
    return outcome


def _waiting(ctx: ProjectContext, cycle_id: str, stage: ApprovalStage) -> str:
    asked = ctx.store.approval(cycle_id, stage)
    return approval.describe(asked) if asked else f"cycle {cycle_id} waits for approval of its {stage}"


def _merge_request(passing: list[tuple[Task, WorkResult]]) -> str:
    """What the approver of a merge sees: each passing branch and what its worker said."""
    lines = ["## Branches that passed the judge", ""]
    for task, result in passing:
        stat = result.diff_stat.strip().splitlines()[-1].strip() if result.diff_stat.strip() else "no diff"
        lines += [f"### {task.title} (`{task.id}`)", "", f"Branch `{result.branch}` at `{(result.commit or '')[:12]}`: {stat}",
                  "", result.summary or "(no summary)", ""]
    return "\n".join(lines)


async def _baseline(ctx: ProjectContext, ref: ProjectRef, cycle_id: str, base: str, batch: bool) -> Baseline:
    with span("step", "baseline"):
        return await _step(ctx, baseline)(ref, cycle_id, base, batch)


async def _publish_verdicts(ctx: ProjectContext, judged: list[tuple[Task, WorkResult]], verdicts: list[Verdict]) -> None:
    rows = [
        {"task": t.title, "id": t.id, "verdict": "pass" if v.passed else "fail",
         "reasons": "; ".join(v.reasons) or "-",
         "flaky tests": ", ".join(flaky_names(v.tests) if v.tests else []) or "-",
         "review cost ($)": f"{v.cost_usd:.4f}"}
        for (t, _), v in zip(judged, verdicts, strict=True)
    ]
    await acreate_table_artifact(key=artifact_key("verdicts", ctx.name), table=rows,
                                description="Judge verdicts of this cycle")


async def _publish_summary(ctx: ProjectContext, summary: CycleSummary) -> None:
    costs = "\n".join(f"| {role} | ${cost:.4f} |" for role, cost in sorted(summary.cost_by_role.items()))
    # First lines only: the test output behind a reason is in the verdicts and the audit trail.
    titles = {t.id: t.title for t in ctx.store.tasks_of(summary.rejected)}
    rejected = "\n".join(
        f"- {titles.get(t, t)} (`{t}`): {why.splitlines()[0] if why else '-'}" for t, why in summary.rejected.items()
    ) or "None."
    await acreate_markdown_artifact(
        key=artifact_key("summary", ctx.name),
        description=f"Summary of cycle {summary.cycle_id}",
        markdown=(
            f"# Cycle {summary.cycle_id} of {summary.project}: {summary.status}\n\n"
            f"Planned {len(summary.planned)}, worked {len(summary.worked)}, passed {len(summary.passed)}, "
            f"merged {len(summary.merged)}.\n\n## Not merged\n\n{rejected}\n\n"
            f"## Cost\n\n| role | cost |\n|---|---|\n{costs}\n\n**Total: ${summary.total_cost_usd:.4f}**\n\n"
            f"Audit trail: `{Path(ctx.orch_dir)}`\n"
        ),
    )
