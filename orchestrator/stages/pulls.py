"""``merge_strategy: "pr"``: passing branches become GitHub pull requests.

Instead of merging into main here, each branch that passed the judge is
pushed to ``origin`` and a pull request is opened against main (or the open
one for that branch is reused); a branch, or a pull request's text, holding a
secret is sent back instead and nothing of it is pushed. The task waits
``in_review``; a later cycle asks GitHub about it (:func:`sync`): merged,
the task is done and main is fast-forwarded from ``origin``; closed
unmerged, the task fails with that reason. With ``auto_merge``, an open one
GitHub calls mergeable is merged through the API first.
"""

from __future__ import annotations

import logging

from orchestrator.adapters.github import Check, Comment, GitHub, GitHubError, PullRequest
from orchestrator.adapters.secret_scan import (
    Secret,
    known_secrets,
    scan_branch,
    scan_text,
    secret_reason,
)
from orchestrator.domain.errors import ConfigError, GitError
from orchestrator.domain.models import (
    MergeOutcome,
    PullNotice,
    PullSync,
    Task,
    TaskStatus,
    TaskWait,
    Wait,
    WorkResult,
)
from orchestrator.stages.backlog import github, tick_item
from orchestrator.stages.context import ProjectContext

logger = logging.getLogger(__name__)


def pull_body(task: Task, work: WorkResult) -> str:
    """What a pull request says: the task, the worker's summary, and the issue it closes."""
    parts = [task.description, "", "## What the worker did", "", work.summary or "(no summary)", "",
             f"Orchestrator task `{task.id}`, attempt {work.attempt}, cycle `{work.cycle_id}`. "
             "It passed the project's tests, lint and an AI review."]
    if task.backlog_item and task.backlog_item.startswith("#"):
        parts += ["", f"Closes {task.backlog_item}"]
    return "\n".join(parts)


def _open_one(ctx: ProjectContext, gh: GitHub, task: Task, work: WorkResult) -> str:
    worktree = ctx.repo.worktree_path(task.id)
    work_commit = ctx.repo.head_of(worktree)
    # The tick merges with the pull request. It is pushed, not kept here: the
    # worktree stays at the recorded work, so a retry after a failed push or
    # request reuses that work instead of paying for it again.
    ticked = tick_item(ctx, worktree, task) and ctx.repo.commit_all(
        worktree, f"Tick backlog item {task.backlog_item}: {task.title}") is not None
    try:
        ctx.repo.push_branch(work.branch)
    finally:
        if ticked:
            ctx.repo.reset_worktree_to(worktree, work_commit)
    found = gh.find_pull(work.branch)
    if found is not None and found.state == "open":
        return found.url  # a retried task's push updated it
    return gh.open_pull(work.branch, ctx.repo.main, task.title, pull_body(task, work)).url


def publish(ctx: ProjectContext, cycle_id: str, candidates: list[tuple[Task, WorkResult]]) -> MergeOutcome:
    """Push each passing branch and open its pull request; main does not move here."""
    head = ctx.repo.head()
    outcome = MergeOutcome(cycle_id=cycle_id, main_before=head, main_after=head)
    if not candidates:
        return outcome
    secrets = known_secrets(ctx.portfolio, ctx.config)
    with github(ctx) as gh:
        for task, work in candidates:
            try:
                leaks = _leaks(ctx, task, work, secrets)
                if leaks:  # nothing of it leaves this machine; its task goes back with the reason
                    outcome.rejected[task.id] = leaks
                    continue
                outcome.pulls[task.id] = _open_one(ctx, gh, task, work)
            except (GitError, GitHubError) as exc:  # the work is kept; the next cycle tries again
                outcome.waiting[task.id] = Wait(kind=TaskWait.merge, reason=f"pull request not opened: {exc}")
                continue
            try:
                answer_reviews(ctx, gh, task, work, pull_number(outcome.pulls[task.id]))
            except GitHubError as exc:  # the change is pushed; a reply lost is said in the log
                logger.warning("Could not answer the review comments on %s: %s", outcome.pulls[task.id], exc)
    return outcome


def _leaks(ctx: ProjectContext, task: Task, work: WorkResult, secrets: list[Secret]) -> str:
    """Why a branch may not be pushed because it, or its pull request's text, holds a secret ('' if not)."""
    findings = scan_branch(ctx.repo, work.base_commit, ctx.repo.head(work.branch), secrets)
    findings += scan_text(f"{task.title}\n{pull_body(task, work)}", "the pull request's text", secrets)
    return secret_reason(findings, "the branch or its pull request adds") if findings else ""


def pull_number(url: str) -> int:
    """The number at the end of a pull request's URL (``.../pull/12``)."""
    return int(url.rstrip("/").rsplit("/", 1)[1])


def sync(ctx: ProjectContext) -> PullSync:
    """Finish tasks whose pull requests merged or closed, send CI failures back to their workers,
    merge what may be merged (``auto_merge``); fast-forward main from ``origin``.

    Never raises for GitHub or git trouble: it is logged and asked again next cycle.
    """
    waiting = ctx.store.list_tasks(TaskStatus.in_review)
    found = PullSync()
    if waiting:
        try:
            with github(ctx) as gh:
                for task in waiting:
                    _settle(ctx, gh, task, found)
        except (GitHubError, ConfigError) as exc:
            logger.warning("Could not read the pull requests of %s (asked again next cycle): %s", ctx.name, exc)
    if ctx.config.merge_strategy == "pr" or found.merged:
        _follow_remote(ctx)
    return found


def _settle(ctx: ProjectContext, gh: GitHub, task: Task, found: PullSync) -> None:
    pull = gh.pull(task.pr_number or pull_number(task.pr_url or ""))
    if pull.merged:
        ctx.store.complete_task(task.id, pull.merge_commit_sha or "")
        found.merged.append(task.id)
        return
    if pull.state == "closed":
        ctx.store.update_task(task.id, status=TaskStatus.failed,
                              last_failure=f"pull request {pull.url} was closed without merging")
        return
    if _ci_failed(ctx, gh, task, pull, found) or _reviewed(ctx, gh, task, pull, found):
        return
    merged = _auto_merge(ctx, gh, pull)
    if merged:
        ctx.store.complete_task(task.id, merged)
        found.merged.append(task.id)


def _ci_failed(ctx: ProjectContext, gh: GitHub, task: Task, pull: PullRequest, found: PullSync) -> bool:
    """Whether CI failed on the pull request's head (every check done, one failed); acted on once per head.

    ``on_ci_failure: "fix"`` sends the task back to its worker with the failing checks' output,
    up to ``max_ci_fix_attempts`` rounds (a round does not spend one of the task's attempts);
    past them, or with ``"notify"``, a person is told instead. Recorded with the head it was
    for, in one write, so a crash or a second sync never acts on the same failure twice.
    """
    mode = ctx.config.on_ci_failure
    if mode == "ignore" or not pull.head_sha:
        return False
    checks = gh.checks(pull.head_sha)
    failed = [c for c in checks if c.state == "failure"]
    if not failed or any(c.state == "pending" for c in checks):
        return False
    if task.ci_seen_sha == pull.head_sha:
        return True
    names = ", ".join(c.name for c in failed)
    if mode == "notify" or task.ci_fixes >= ctx.config.max_ci_fix_attempts:
        human = mode == "fix"
        reason = (f"CI still fails after {task.ci_fixes} fix round(s): {names}; a person must look at {pull.url}"
                  if human else f"CI failed on {pull.url}: {names}")
        ctx.store.update_task(task.id, ci_seen_sha=pull.head_sha, last_failure=reason)
        found.notices.append(PullNotice(task_id=task.id, url=pull.url, needs_human=human, reason=reason))
        return True
    evidence = f"CI failed on pull request {pull.url} (commit {pull.head_sha[:12]}):\n\n" + _evidence(gh, failed)
    ctx.store.update_task(task.id, status=TaskStatus.pending, claimed_by=None, ci_seen_sha=pull.head_sha,
                          ci_fixes=task.ci_fixes + 1, max_attempts=task.max_attempts + 1, last_failure=evidence)
    found.sent_back.append(task.id)
    return True


TRUSTED = {"OWNER", "MEMBER", "COLLABORATOR"}  # author associations with write access


def _reviewed(ctx: ProjectContext, gh: GitHub, task: Task, pull: PullRequest, found: PullSync) -> bool:
    """Whether reviewers asked for changes since the last read; each review and comment is read once.

    Comments are untrusted input for an agent's prompt: only those of authors with write access,
    or listed in ``review_authors``, are acted on, and never our own (our replies among them).
    ``on_review_comments: "address"`` sends the task back to its worker with them, up to
    ``max_ci_fix_attempts`` rounds; past them, or with ``"notify"``, a person is told.
    """
    mode = ctx.config.on_review_comments
    if mode == "ignore":
        return False
    seen = set(task.review_seen)
    me = _login(gh)
    new = [c for c in gh.review_comments(pull.number)
           if c.id not in seen and c.author != me and not c.body.startswith(REPLY_MARK)]
    if not new:
        return False
    read = sorted(seen | {c.id for c in new})  # an outsider's comment is read too, and never acted on
    acted = [c for c in new if c.association in TRUSTED or c.author in ctx.config.review_authors]
    if not acted:
        ctx.store.update_task(task.id, review_seen=read)
        return False
    said = "\n\n".join(_review_text(c) for c in acted)
    if mode == "notify" or task.review_rounds >= ctx.config.max_ci_fix_attempts:
        human = mode == "address"
        reason = (f"reviewers still ask for changes after {task.review_rounds} round(s); a person must look "
                  f"at {pull.url}" if human else f"reviewers asked for changes on {pull.url}")
        ctx.store.update_task(task.id, review_seen=read, last_failure=f"{reason}:\n\n{said}")
        found.notices.append(PullNotice(task_id=task.id, url=pull.url, needs_human=human, reason=reason))
        return True
    ctx.store.update_task(task.id, status=TaskStatus.pending, claimed_by=None, review_seen=read,
                          review_rounds=task.review_rounds + 1, max_attempts=task.max_attempts + 1,
                          review_replies=[-c.id if c.review else c.id for c in acted],
                          last_failure=f"Reviewers asked for changes on pull request {pull.url}:\n\n{said}")
    found.sent_back.append(task.id)
    return True


REPLY_MARK = "Changed in "
"""How the orchestrator's replies begin: known as ours even when the token cannot say who it is."""


def _login(gh: GitHub) -> str:
    """Who our token is ('' when it may not ask, as a GitHub App's installation token may not)."""
    try:
        return gh.login()
    except GitHubError as exc:
        if exc.status not in (401, 403, 404):
            raise
        return ""


def _review_text(comment: Comment) -> str:
    where = f" on {comment.path}" + (f" line {comment.line}" if comment.line else "") if comment.path else ""
    kind = "review" if comment.review else "comment"
    return f"- {kind} by {comment.author}{where}:\n{comment.body.strip() or '(no text)'}"


def answer_reviews(ctx: ProjectContext, gh: GitHub, task: Task, work: WorkResult, number: int) -> None:
    """Reply to each comment the pushed round addressed, with what the worker changed; each once."""
    waiting = list(task.review_replies)
    for comment_id in task.review_replies:
        body = f"{REPLY_MARK}{(work.commit or '')[:12]} by the orchestrator's worker: {work.summary or '(no summary)'}"
        if comment_id < 0:  # a review: answered in the conversation
            gh.comment(number, body)
        else:
            gh.reply(number, comment_id, body)
        waiting.remove(comment_id)
        ctx.store.update_task(task.id, review_replies=waiting)


EVIDENCE_CHARS = 6000  # of each failing check's output or log: its end, where the error is


def _evidence(gh: GitHub, failed: list[Check]) -> str:
    """What each failing check said: an Actions job's log tail, else the check's own output."""
    parts = []
    for check in failed:
        said = check.output
        if check.job_id is not None:
            try:
                said = gh.job_log(check.job_id, EVIDENCE_CHARS) or said
            except GitHubError as exc:  # the check's output still says something
                logger.warning("Could not read the log of check %s: %s", check.name, exc)
        parts.append(f"### {check.name} ({check.url})\n\n{said[-EVIDENCE_CHARS:] or '(it said nothing)'}")
    return "\n\n".join(parts)


def _auto_merge(ctx: ProjectContext, gh: GitHub, pull: PullRequest) -> str:
    """Merge an open pull request of ours through the API once GitHub says nothing stands in its
    way; the merge commit, or '' when it stays open.

    Only "clean" counts: approved where the repository requires it, required checks green, no
    conflict. Its head must still be the one GitHub judged, so a push since is never merged
    unseen. A refusal (the state changed meanwhile) waits for the next sync; a merge whose
    answer was lost is found merged then.
    """
    if not ctx.config.auto_merge or pull.mergeable_state != "clean":
        return ""
    try:
        return gh.merge(pull.number, ctx.config.merge_method, pull.head_sha)
    except GitHubError as exc:
        if exc.status not in (405, 409):
            raise
        logger.info("Pull request %s of %s is not merged yet: %s", pull.url, ctx.name, exc)
        return ""


def _follow_remote(ctx: ProjectContext) -> None:
    """Fast-forward main to ``origin``'s main, where the pull requests merge."""
    if not ctx.repo.has_remote():
        return
    try:
        remote = ctx.repo.fetch_main()
        local = ctx.repo.head()
        if remote != local and ctx.repo.is_ancestor(local, remote):
            moved, why = ctx.repo.advance_main(remote, local)
            if not moved:
                logger.warning("Main of %s stays at %s: %s", ctx.name, local[:12], why)
    except GitError as exc:
        logger.warning("Could not follow origin's main of %s: %s", ctx.name, exc)
