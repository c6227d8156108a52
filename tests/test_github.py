"""The GitHub client against the fake GitHub: real HTTP on loopback, real git."""

from __future__ import annotations

import pickle
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fake_github import FakeGitHub

from orchestrator.adapters import github
from orchestrator.adapters.github import GitHub, GitHubError, repo_from_remote

TOKEN = "ghp_fake_token_0123456789abcdef"
_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@localhost"]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with main (one commit) and branch feature (one more)."""
    work, bare = tmp_path / "work", tmp_path / "remote.git"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "README.md").write_text("widgets\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial commit")
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    git(work, "checkout", "-q", "-b", "feature")
    (work / "greet.py").write_text("print('hello')\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "add greeting")
    git(work, "push", "-q", "origin", "feature")
    return bare


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as gh:
        yield gh


@pytest.fixture
def hub(remote: Path) -> Iterator[FakeGitHub]:
    """The fake GitHub in front of the bare repository ``remote``."""
    with FakeGitHub(token=TOKEN, remote=remote) as gh:
        yield gh


def client(fake: FakeGitHub, token: str | None = TOKEN, retries: int = 2) -> GitHub:
    """A client of the fake with quick timeouts and backoff."""
    return GitHub(fake.repo, token, fake.api_url, timeout_s=5, retries=retries, backoff_s=0.01)


def refused(call: object) -> GitHubError:
    assert callable(call)
    with pytest.raises(GitHubError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and TOKEN not in message
    return caught.value


# -- issues -------------------------------------------------------------------


def test_open_issues_follows_pages_filters_by_label_oldest_first(fake: FakeGitHub) -> None:
    wanted = [fake.add_issue(f"Task {i}", body=f"Do {i}.") for i in range(105)]
    fake.add_issue("Someone else's", labels=("bug",))
    fake.issues[fake.add_issue("Done already")]["state"] = "closed"

    issues = client(fake).open_issues("orch")

    assert [i.number for i in issues] == wanted
    assert (issues[0].title, issues[0].body, issues[0].labels) == ("Task 0", "Do 0.", ("orch",))
    assert issues[0].url == f"{fake.url}/acme/widgets/issues/{wanted[0]}"
    assert fake.requests.count(("GET", "/repos/acme/widgets/issues")) == 2


def test_open_issues_needs_every_label_of_a_comma_list(fake: FakeGitHub) -> None:
    both = fake.add_issue("Both", labels=("orch", "ready"))
    fake.add_issue("One", labels=("orch",))
    assert [i.number for i in client(fake).open_issues("orch,ready")] == [both]


def test_pull_requests_are_not_issues(hub: FakeGitHub) -> None:
    issue = hub.add_issue("Real issue")
    gh = client(hub)
    pull = gh.open_pull("feature", "main", "Add greeting", "Closes #1")
    gh.add_labels(pull.number, ["orch"])  # the pull now matches the label filter too

    assert hub.pulls[pull.number]["labels"] == ["orch"]
    assert [i.number for i in gh.open_issues("orch")] == [issue]


def test_comment_close_and_labels_are_recorded(fake: FakeGitHub) -> None:
    number = fake.add_issue("Add greeting", labels=("orch",))
    with client(fake) as gh:
        gh.comment(number, "Picked up by the orchestrator.")
        gh.add_labels(number, ["orch:done", "orch"])
        gh.close_issue(number)

    issue = fake.issues[number]
    assert issue["comments"] == ["Picked up by the orchestrator."]
    assert issue["labels"] == ["orch", "orch:done"]
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    assert client(fake).open_issues("orch") == []


def test_requests_carry_githubs_headers(fake: FakeGitHub) -> None:
    client(fake).open_issues("orch")
    headers = fake.last_headers
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["user-agent"] == "orchestrator"


def test_api_url_may_end_with_a_slash(fake: FakeGitHub) -> None:
    fake.add_issue("Add greeting")
    gh = GitHub(fake.repo, TOKEN, api_url=fake.api_url + "/")
    assert len(gh.open_issues("orch")) == 1


# -- pull requests ------------------------------------------------------------


def test_open_find_and_read_a_pull(hub: FakeGitHub) -> None:
    issue = hub.add_issue("Add greeting")
    gh = client(hub)

    opened = gh.open_pull("feature", "main", "Add greeting", f"Closes #{issue}")

    assert opened.number == issue + 1  # issues and pulls share one counter
    assert opened.url == f"{hub.url}/acme/widgets/pull/{opened.number}"
    assert (opened.state, opened.merged, opened.merge_commit_sha) == ("open", False, None)
    assert opened.head == "feature" and opened.head_sha == git(hub.remote or Path(), "rev-parse", "feature").strip()
    assert gh.pull(opened.number) == opened and opened.mergeable_state == "unknown"
    assert gh.find_pull("feature") == replace(opened, mergeable_state="")  # listings do not say
    assert gh.find_pull("no-such-branch") is None
    assert hub.pulls[opened.number]["body"] == f"Closes #{issue}"


def test_a_merged_pull_reports_the_merge_commit(hub: FakeGitHub, remote: Path) -> None:
    gh = client(hub)
    opened = gh.open_pull("feature", "main", "Add greeting", "")

    sha = hub.merge_pull(opened.number)

    assert git(remote, "rev-parse", "main").strip() == sha
    assert git(remote, "log", "-1", "--format=%s", "main").strip() == (
        f"Merge pull request #{opened.number} from acme/feature"
    )
    merged = gh.pull(opened.number)
    assert (merged.state, merged.merged, merged.merge_commit_sha) == ("closed", True, sha)
    assert gh.find_pull("feature") == replace(merged, mergeable_state="")  # the listing says so through merged_at


@pytest.mark.parametrize("method", ["merge", "squash", "rebase"])
def test_a_pull_is_merged_through_the_api_only_when_github_says_it_can_be(
    hub: FakeGitHub, remote: Path, method: str
) -> None:
    gh = client(hub)
    opened = gh.open_pull("feature", "main", "Add greeting", "")
    assert refused(lambda: gh.merge(opened.number, method, opened.head_sha)).status == 405  # "unknown" yet
    hub.set_mergeable(opened.number, "clean")
    moved = refused(lambda: gh.merge(opened.number, method, "0" * 40))
    assert moved.status == 409 and "Head branch was modified" in str(moved)

    sha = gh.merge(opened.number, method, opened.head_sha)

    assert git(remote, "rev-parse", "main").strip() == sha
    parents = git(remote, "log", "-1", "--format=%P", "main").split()
    assert len(parents) == (2 if method == "merge" else 1)
    assert git(remote, "show", "main:greet.py") == "print('hello')\n"
    merged = gh.pull(opened.number)
    assert (merged.state, merged.merged, merged.merge_commit_sha) == ("closed", True, sha)


def test_find_pull_gives_the_newest(hub: FakeGitHub) -> None:
    gh = client(hub)
    first = gh.open_pull("feature", "main", "First try", "")
    hub.close_pull(first.number)
    second = gh.open_pull("feature", "main", "Second try", "")

    found = gh.find_pull("feature")

    assert found is not None and found.number == second.number
    assert gh.pull(first.number).state == "closed" and not gh.pull(first.number).merged


def test_a_second_open_pull_for_a_branch_is_refused(hub: FakeGitHub) -> None:
    gh = client(hub)
    gh.open_pull("feature", "main", "Add greeting", "")
    error = refused(lambda: gh.open_pull("feature", "main", "Again", ""))
    assert error.status == 422
    assert "A pull request already exists for acme:feature." in str(error)


def test_a_pull_from_a_missing_branch_names_githubs_errors(hub: FakeGitHub) -> None:
    error = refused(lambda: client(hub).open_pull("not-pushed", "main", "Add greeting", ""))
    assert error.status == 422
    assert str(error).startswith("GitHub POST /repos/acme/widgets/pulls: 422 Validation Failed")
    assert "head branch 'not-pushed' does not exist" in str(error)


def test_a_pull_without_new_commits_is_refused(hub: FakeGitHub) -> None:
    error = refused(lambda: client(hub).open_pull("main", "main", "Nothing", ""))
    assert error.status == 422 and "No commits between main and main" in str(error)


# -- refusals -----------------------------------------------------------------


def test_a_bad_token_names_the_environment_variable_not_the_token(fake: FakeGitHub) -> None:
    wrong = TOKEN[::-1]
    error = refused(lambda: client(fake, token=wrong).open_issues("orch"))
    assert error.status == 401
    assert "401 Bad credentials" in str(error) and "GITHUB_TOKEN" in str(error)
    assert wrong not in str(error)


def test_no_token_says_to_set_one(fake: FakeGitHub) -> None:
    error = refused(lambda: client(fake, token=None).comment(1, "hi"))
    assert error.status == 401 and "set GITHUB_TOKEN" in str(error)


def test_an_unknown_repository_says_to_check_its_name(fake: FakeGitHub) -> None:
    gh = GitHub("acme/gadgets", TOKEN, api_url=fake.api_url, backoff_s=0.01)
    error = refused(lambda: gh.open_issues("orch"))
    assert error.status == 404
    assert str(error).startswith("GitHub GET /repos/acme/gadgets/issues: 404 Not Found;")
    assert "'acme/gadgets'" in str(error) and "can see it" in str(error)


def test_an_unknown_issue_names_its_number(fake: FakeGitHub) -> None:
    error = refused(lambda: client(fake).close_issue(99))
    assert error.status == 404 and "#99" in str(error)


def test_a_plain_403_is_not_retried(fake: FakeGitHub) -> None:
    fake.fail_next(403)
    error = refused(lambda: client(fake).comment(fake.add_issue("x"), "hi"))
    assert error.status == 403 and "may write" in str(error)
    assert len(fake.requests) == 1


# -- retries ------------------------------------------------------------------


def test_transient_failures_are_retried(fake: FakeGitHub) -> None:
    fake.add_issue("Add greeting")
    fake.fail_next(503, count=1)
    fake.fail_next(502, count=1)
    assert len(client(fake, retries=2).open_issues("orch")) == 1
    assert len(fake.requests) == 3


def test_too_many_failures_give_one_error(fake: FakeGitHub) -> None:
    fake.fail_next(503, count=3)
    error = refused(lambda: client(fake, retries=2).open_issues("orch"))
    assert error.status == 503
    assert str(error) == (
        "GitHub GET /repos/acme/widgets/issues: 503 Service Unavailable; "
        "GitHub is having trouble; try again later"
    )
    assert len(fake.requests) == 3
    assert error.__cause__ is None  # a status, not a wrapped exception


def test_retry_after_is_honoured(fake: FakeGitHub) -> None:
    fake.fail_next(429, retry_after=0.3)
    started = time.monotonic()
    assert client(fake).open_issues("orch") == []
    assert time.monotonic() - started >= 0.3


def test_retry_after_is_capped(fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(github, "MAX_WAIT_S", 0.05)
    fake.fail_next(429, retry_after=600)
    started = time.monotonic()
    assert client(fake).open_issues("orch") == []
    assert time.monotonic() - started < 5


def test_an_exhausted_rate_limit_waits_for_the_reset(fake: FakeGitHub) -> None:
    fake.fail_next(403, count=2, ratelimit_reset_s=0.05)
    assert client(fake, retries=2).open_issues("orch") == []
    fake.fail_next(403, count=3, ratelimit_reset_s=0.01)
    error = refused(lambda: client(fake, retries=2).open_issues("orch"))
    assert error.status == 403 and "rate limit" in str(error)


def test_a_refused_connection_is_retried_then_reported(unused_port: int) -> None:
    gh = GitHub("acme/widgets", TOKEN, api_url=f"http://127.0.0.1:{unused_port}", backoff_s=0.01)
    error = refused(lambda: gh.pull(1))
    assert error.status is None
    assert "could not connect" in str(error) and "GET /repos/acme/widgets/pulls/1" in str(error)
    assert error.__cause__ is not None


def test_a_silent_server_times_out() -> None:
    with socket.socket() as silent:  # listens but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        gh = GitHub(
            "acme/widgets",
            TOKEN,
            api_url=f"http://127.0.0.1:{port}",
            timeout_s=0.2,
            retries=1,
            backoff_s=0.01,
        )
        started = time.monotonic()
        error = refused(lambda: gh.open_issues("orch"))
    assert "timed out" in str(error) and time.monotonic() - started < 3


def test_a_next_page_on_another_host_is_not_followed(fake: FakeGitHub) -> None:
    for i in range(101):
        fake.add_issue(f"Task {i}")
    # The fake's Link header names 127.0.0.1; the client was pointed at localhost.
    gh = GitHub(fake.repo, TOKEN, api_url=fake.api_url.replace("127.0.0.1", "localhost"))
    error = refused(lambda: gh.open_issues("orch"))
    assert "another host" in str(error)
    assert len(fake.requests) == 1


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- reading answers -------------------------------------------------------------


def test_an_issue_without_a_body_reads_as_empty(fake: FakeGitHub) -> None:
    number = fake.add_issue("Add greeting")
    fake.issues[number]["body"] = None  # GitHub sends null for an issue nobody described
    (issue,) = client(fake).open_issues("orch")
    assert (issue.number, issue.body, issue.labels) == (number, "", ("orch",))


def test_an_answer_of_another_shape_is_one_error(fake: FakeGitHub) -> None:
    number = fake.add_issue("Add greeting")
    fake.issues[number]["title"] = ["not", "text"]
    error = refused(lambda: client(fake).open_issues("orch"))
    assert "GET /repos/acme/widgets/issues: unexpected answer (title:" in str(error)


# -- odds and ends ------------------------------------------------------------


def test_the_error_keeps_its_status_when_pickled() -> None:
    copy = pickle.loads(pickle.dumps(GitHubError("GitHub GET /x: 502", 502)))
    assert (str(copy), copy.status) == ("GitHub GET /x: 502", 502)


def test_a_malformed_repository_name_is_refused() -> None:
    with pytest.raises(GitHubError, match="owner/name"):
        GitHub("widgets", TOKEN)


@pytest.mark.parametrize(
    ("url", "repo"),
    [
        ("git@github.com:acme/widgets.git", "acme/widgets"),
        ("git@github.com:acme/widgets", "acme/widgets"),
        ("github.com:acme/widgets.git", "acme/widgets"),
        ("https://github.com/acme/widgets.git", "acme/widgets"),
        ("https://github.com/acme/widgets", "acme/widgets"),
        ("https://github.com/acme/widgets/", "acme/widgets"),
        ("https://user@github.example.com/acme/my.widgets.git", "acme/my.widgets"),
        ("ssh://git@github.com/acme/widgets.git", "acme/widgets"),
        ("ssh://git@github.com:2222/acme/widgets.git", "acme/widgets"),
        ("/srv/git/widgets.git", None),
        ("../widgets", None),
        ("file:///srv/git/acme/widgets.git", None),
        ("C:\\repos\\acme\\widgets", None),
        ("https://github.com/acme", None),
        ("https://github.com/acme/widgets/tree/main", None),
        ("", None),
    ],
)
def test_repo_from_remote(url: str, repo: str | None) -> None:
    assert repo_from_remote(url) == repo


def test_checks_of_a_commit_and_a_jobs_log(fake: FakeGitHub) -> None:
    gh = client(fake)
    sha = "ab" * 20
    log = "collecting...\n" + "x" * 50 + "\nFAILED test_calc.py::test_add"
    job = fake.add_check_run(sha, "tests", "failure", log=log)
    fake.add_check_run(sha, "lint", "success", output="all clean")
    fake.add_check_run(sha, "docs", None)
    fake.add_check_run(sha, "deploy preview", "timed_out", output="gave up after 10 minutes")
    fake.add_status(sha, "ci/other", "error", "the runner died")
    fake.add_status(sha, "ci/legacy", "pending")

    checks = {c.name: c for c in gh.checks(sha)}

    assert {n: c.state for n, c in checks.items()} == {
        "tests": "failure", "lint": "success", "docs": "pending", "deploy preview": "failure",
        "ci/other": "failure", "ci/legacy": "pending"}
    assert checks["tests"].job_id == job and checks["lint"].job_id is None
    assert checks["deploy preview"].output == "deploy preview\n\ngave up after 10 minutes"
    assert checks["ci/other"].output == "the runner died" and checks["ci/other"].url.endswith("/ci/ci/other")
    # The log is a file GitHub redirects to; its end is where the failure is.
    assert gh.job_log(job, tail_chars=30) == log[-30:] and gh.job_log(job) == log
    assert gh.checks("cd" * 20) == []
