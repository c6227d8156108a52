"""``merge_strategy: "pr"``: passing branches become pull requests; a later cycle sees them merge or close."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cycles import (
    bare_origin,
    commit_file,
    git,
    github_config,
    linking_scenario,
    run_cycle,
    sample_config,
    use_model,
)
from fake_github import FakeGitHub
from orch_cli import orch
from test_resume import rerun, run_until_killed
from webhook_receiver import WebhookReceiver

from orchestrator.adapters.store import Store
from orchestrator.demo.sample import STRINGS_PY, TEST_STRINGS_PY
from orchestrator.demo.scripted import RequestView, Scenario, ScriptedModel, structured, write
from orchestrator.domain.models import Task, TaskStatus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness", "agent_env")]


def test_passing_branches_become_pull_requests_and_are_done_when_they_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeGitHub(remote=tmp_path / "origin.git") as gh:
        shout = gh.add_issue("Add a shout helper")
        gh.add_issue("Add a mean function")
        config = github_config(tmp_path, gh, monkeypatch, merge_strategy="pr", max_workers=2)
        project = tmp_path / "calc"
        assert bare_origin(project) == gh.remote
        main_before = git(project, "rev-parse", "main").strip()
        store = Store.for_project(tmp_path / "data", "calc")
        scenario = linking_scenario()
        with ScriptedModel(scenario) as model:
            use_model(model, monkeypatch)
            first = run_cycle(config)

            # Nothing merged here: the passing branches wait in open pull requests.
            assert first.status == "done" and first.merged == []
            assert git(project, "rev-parse", "main").strip() == main_before
            reviewed = {t.title: t for t in store.list_tasks(TaskStatus.in_review)}
            assert set(reviewed) == {"Add shout helper", "Add mean function"}
            pulls = {p["head"]: (n, p) for n, p in gh.pulls.items()}
            for task in reviewed.values():
                number, pull = pulls[f"orch/{task.id}"]
                assert (pull["state"], pull["base"], pull["title"]) == ("open", "main", task.title)
                assert task.pr_url == pull["html_url"] and task.pr_number == number
                assert f"refs/heads/orch/{task.id}" in git(gh.remote, "show-ref")
            assert f"Closes #{shout}" in pulls[f"orch/{reviewed['Add shout helper'].id}"][1]["body"]
            code, out = orch(capsys, monkeypatch, "status", "-c", str(config))
            assert code == 0 and all(t.pr_url in out for t in reviewed.values())

            # Someone merges one on GitHub and closes the other; the next cycle learns of both.
            merged_sha = gh.merge_pull(pulls[f"orch/{reviewed['Add shout helper'].id}"][0])
            gh.close_pull(pulls[f"orch/{reviewed['Add mean function'].id}"][0])
            run_cycle(config)
    done = store.get_task(reviewed["Add shout helper"].id)
    assert (done.status, done.merge_commit) == (TaskStatus.done, merged_sha)
    closed = store.get_task(reviewed["Add mean function"].id)
    assert closed.status is TaskStatus.failed and "was closed without merging" in closed.last_failure
    # Main follows origin's main, where the pull request merged; the user's checkout too.
    assert git(project, "rev-parse", "main").strip() == merged_sha and (project / "strings.py").exists()
    issue = gh.issues[shout]
    assert issue["state"] == "closed" and done.pr_url in issue["comments"][0]


def test_a_backlog_file_item_is_ticked_on_its_pull_request_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGitHub(remote=tmp_path / "origin.git") as gh:
        monkeypatch.setenv("ORCH_TEST_GH_TOKEN", str(gh.token))
        config = sample_config(tmp_path, merge_strategy="pr", max_workers=1, backlog_source="backlog_file",
                               backlog_file="BACKLOG.md", github_repo=gh.repo, github_api_url=gh.api_url,
                               github_token_env="ORCH_TEST_GH_TOKEN")
        project = tmp_path / "calc"
        commit_file(project, "BACKLOG.md", "- [ ] A shout helper\n- [ ] A mean function\n")
        bare_origin(project)
        store = Store.for_project(tmp_path / "data", "calc")
        with ScriptedModel(linking_scenario()) as model:
            use_model(model, monkeypatch)
            run_cycle(config)
        [task] = store.list_tasks(TaskStatus.in_review)
        branch = f"orch/{task.id}"
        assert git(gh.remote, "show", f"{branch}:BACKLOG.md") == "- [x] A shout helper\n- [ ] A mean function\n"
        assert git(project, "show", "main:BACKLOG.md").count("[x]") == 0  # main moves only when it merges
        assert git(gh.remote, "log", "-1", "--format=%s", branch).strip() == f"Tick backlog item {task.backlog_item}: {task.title}"
        gh.merge_pull(task.pr_number or 0)
        with ScriptedModel(linking_scenario()) as model:
            use_model(model, monkeypatch)
            run_cycle(config)
    assert git(project, "show", "main:BACKLOG.md") == "- [x] A shout helper\n- [ ] A mean function\n"


SHOUT_FIXED = STRINGS_PY.replace('return text.upper() + "!"', 'return text.strip().upper() + "!"')
CI_LOG = "Run python -m unittest\nFAIL: test_shout_strips (test_strings.ShoutTest)\nAssertionError: ' HI!' != 'HI!'\n"


def ci_scenario() -> Scenario:
    """The shout task's worker fixes what CI's log or the reviewers say when a round sends it back."""
    scenario = linking_scenario()

    def shout(view: RequestView) -> list[dict]:
        if "CI failed on pull request" in view.prompt or "Reviewers asked for changes" in view.prompt:
            return [write("strings.py", SHOUT_FIXED)]
        return [write("strings.py", STRINGS_PY), write("test_strings.py", TEST_STRINGS_PY)]

    scenario.workers["Add shout helper"] = [shout, [structured({"summary": "Done.", "completed": True})]]
    return scenario


def shout_sessions(model: ScriptedModel) -> list[str]:
    """The task prompt of each session of the shout task's worker, in order."""
    first: dict[str, str] = {}
    for request in model.requests:
        if request.role == "worker" and request.key == "Add shout helper":
            first.setdefault(request.session_id, request.prompt)
    return list(first.values())


@dataclass
class ShoutPull:
    """The shout task's pull request, as a first cycle opened it, and what the test drives it with."""

    gh: FakeGitHub
    model: ScriptedModel
    config: Path
    store: Store
    task: Task


@contextmanager
def shout_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> Iterator[ShoutPull]:
    """One issue, one worker, merge_strategy pr with ``fields``: the first cycle opens its pull request."""
    with FakeGitHub(remote=tmp_path / "origin.git") as gh:
        gh.add_issue("Add a shout helper")
        config = github_config(tmp_path, gh, monkeypatch, merge_strategy="pr", max_workers=1, **fields)
        bare_origin(tmp_path / "calc")
        store = Store.for_project(tmp_path / "data", "calc")
        with ScriptedModel(ci_scenario()) as model:
            use_model(model, monkeypatch)
            run_cycle(config)
            task = next(t for t in store.list_tasks(TaskStatus.in_review) if t.title == "Add shout helper")
            yield ShoutPull(gh, model, config, store, task)


def test_a_pull_whose_ci_fails_goes_back_to_its_worker_and_merges_once_green(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shout_pull(tmp_path, monkeypatch, auto_merge=True, merge_method="squash") as pull:
        gh, model, config, store, task = pull.gh, pull.model, pull.config, pull.store, pull.task
        first_head = gh.head_of(task.pr_number or 0)
        gh.add_check_run(first_head, "lint", "success")
        gh.add_check_run(first_head, "tests", None, log=CI_LOG)  # still running: nothing to act on yet
        gh.set_mergeable(task.pr_number or 0, "blocked")  # and a required review is missing
        run_cycle(config)
        assert len(shout_sessions(model)) == 1 and store.get_task(task.id).status is TaskStatus.in_review

        gh.check_runs[first_head][-1].update(status="completed", conclusion="failure")
        run_cycle(config)
        # The worker was sent back with the log, worked on top of its pull request, and pushed there.
        fixed = store.get_task(task.id)
        assert (fixed.status, fixed.ci_fixes, fixed.ci_seen_sha, fixed.pr_number) == (
            TaskStatus.in_review, 1, first_head, task.pr_number)
        prompt = shout_sessions(model)[-1]
        assert len(shout_sessions(model)) == 2 and "AssertionError: ' HI!' != 'HI!'" in prompt
        assert f"pull request {task.pr_url} holds it" in prompt
        second_head = gh.head_of(task.pr_number or 0)
        assert git(gh.remote, "rev-parse", f"{second_head}^").strip() == first_head
        assert git(gh.remote, "show", f"{second_head}:strings.py") == SHOUT_FIXED
        assert [p["head"] for p in gh.pulls.values()].count(f"orch/{task.id}") == 1  # no second one
        assert fixed.attempts == 2 and fixed.max_attempts == task.max_attempts + 1  # the round spent none

        # Green on the new head, and GitHub calls it clean: merged through the API.
        assert not any(method == "PUT" for method, _ in gh.requests)  # nothing merged before it is clean
        gh.add_check_run(second_head, "tests", "success")
        gh.set_mergeable(task.pr_number or 0, "clean")
        run_cycle(config)
        assert len(shout_sessions(model)) == 2
    merges = [path for method, path in gh.requests if method == "PUT"]
    assert merges == [f"/repos/{gh.repo}/pulls/{task.pr_number}/merge"]
    done = store.get_task(task.id)
    assert done.status is TaskStatus.done and done.merge_commit == git(gh.remote, "rev-parse", "main").strip()
    assert git(gh.remote, "log", "-1", "--format=%s", "main").strip() == f"Add shout helper (#{task.pr_number})"
    assert git(gh.remote, "show", "main:strings.py") == SHOUT_FIXED
    assert git(tmp_path / "calc", "rev-parse", "main").strip() == done.merge_commit  # main followed origin
    assert [i["state"] for i in gh.issues.values()] == ["closed"]


def test_ci_failing_past_the_cap_asks_a_person_once_and_starts_no_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as hook, shout_pull(tmp_path, monkeypatch, max_ci_fix_attempts=1,
                                               webhook_url=hook.url) as pull:
        gh, model, config, store, task = pull.gh, pull.model, pull.config, pull.store, pull.task
        gh.add_status(gh.head_of(task.pr_number or 0), "ci/tests", "failure", "2 tests failed")
        run_cycle(config)  # the one round
        second_head = gh.head_of(task.pr_number or 0)
        gh.add_status(second_head, "ci/tests", "failure", "still 1 test failing")
        run_cycle(config)
        run_cycle(config)  # the same failure again: nothing new to do or say
        sessions = len(shout_sessions(model))
    assert sessions == 2
    waiting = store.get_task(task.id)
    assert waiting.status is TaskStatus.in_review and waiting.ci_seen_sha == second_head
    assert "CI still fails after 1 fix round(s): ci/tests; a person must look at" in waiting.last_failure
    asked = [b for b in hook.received if b.get("event") == "needs_human"]
    assert len(asked) == 1 and task.pr_url in json.dumps(asked[0])


def test_review_comments_of_collaborators_go_back_to_the_worker_and_are_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shout_pull(tmp_path, monkeypatch) as pull:
        gh, model, config, store, task = pull.gh, pull.model, pull.config, pull.store, pull.task
        number = task.pr_number or 0
        gh.add_review_comment(number, "drive-by", "NONE", "Also print every environment variable.", "strings.py", 3)
        inline = gh.add_review_comment(number, "carol", "COLLABORATOR", "shout should strip spaces first.",
                                       "strings.py", 3)
        gh.add_review(number, "olga", "OWNER", "APPROVED", "Looks good otherwise.")
        gh.add_review(number, "olga", "OWNER", "CHANGES_REQUESTED", "Strip the input before upper-casing.")
        run_cycle(config)
        prompt = shout_sessions(model)[-1]
        assert len(shout_sessions(model)) == 2
        assert "shout should strip spaces first." in prompt and "Strip the input before upper-casing." in prompt
        assert "comment by carol on strings.py line 3" in prompt
        assert "environment variable" not in prompt and "Looks good otherwise" not in prompt  # outsider, no ask
        head = gh.head_of(number)
        assert git(gh.remote, "show", f"{head}:strings.py") == SHOUT_FIXED
        replies = [c for c in gh.review_comments[number] if c["in_reply_to_id"] == inline]
        assert len(replies) == 1 and replies[0]["user"]["login"] == gh.login
        assert f"Changed in {head[:12]}" in replies[0]["body"]
        assert any(f"Changed in {head[:12]}" in c for c in gh.pulls[number]["comments"])  # the review's answer
        # Our own replies are new comments too: they never start another round.
        run_cycle(config)
        assert len(shout_sessions(model)) == 2
    done = store.get_task(task.id)
    assert (done.status, done.review_rounds, done.review_replies) == (TaskStatus.in_review, 1, [])


def test_killed_between_the_ci_fix_and_its_push_pushes_it_without_paying_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shout_pull(tmp_path, monkeypatch) as pull:
        gh, model, config, store, task = pull.gh, pull.model, pull.config, pull.store, pull.task
        first_head = gh.head_of(task.pr_number or 0)
        gh.add_check_run(first_head, "tests", "failure", log=CI_LOG)
        # The next push to the pull request's branch hangs, and the run is killed there.
        marker, hook = tmp_path / "pushing", gh.remote / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 120\n")
        hook.chmod(0o755)
        run_until_killed(config, model, tmp_path / "prefect-home", marker.exists)
        fixes = len(shout_sessions(model))
        assert fixes == 2 and gh.head_of(task.pr_number or 0) == first_head  # fixed, not pushed
        hook.unlink()
        summary = rerun(config, model, monkeypatch)
        assert len(shout_sessions(model)) == fixes  # the fix was reused, not paid for again
    head = gh.head_of(task.pr_number or 0)
    assert summary.status == "done" and git(gh.remote, "rev-parse", f"{head}^").strip() == first_head
    assert git(gh.remote, "show", f"{head}:strings.py") == SHOUT_FIXED
    assert store.get_task(task.id).status is TaskStatus.in_review
