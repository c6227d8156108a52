"""A small synchronous client for the parts of GitHub's REST API the orchestrator uses.

Issues are the backlog (listed by label, commented on, labelled, closed) and
pull requests carry finished branches. Transient failures (a dropped
connection, a timeout, 502/503/504, a rate limit that says when to come back)
are retried a few times; every other failure, and a transient one that
outlasts the retries, becomes one :class:`GitHubError` line naming the
request, GitHub's status and message, and what to do. The token is sent only
to ``api_url``'s own host and never appears in a message.

    with GitHub("acme/widgets", os.environ.get("GITHUB_TOKEN")) as gh:
        for issue in gh.open_issues("orch"):
            gh.comment(issue.number, "Picked up.")
"""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from orchestrator.adapters.github_models import (
    Check,
    CheckRunsJSON,
    CombinedStatusJSON,
    Comment,
    CommentJSON,
    ErrorJSON,
    Issue,
    IssueJSON,
    MergeJSON,
    PullJSON,
    PullRequest,
    ReviewJSON,
    UserJSON,
    WireModel,
    error_text,
)
from orchestrator.adapters.retry import Again, RetryPolicy, call, retry_after_s
from orchestrator.domain.errors import OrchestratorError

__all__ = [
    "DEFAULT_API_URL",
    "MAX_WAIT_S",
    "Check",
    "Comment",
    "GitHub",
    "GitHubError",
    "Issue",
    "PullRequest",
    "repo_from_remote",
]

DEFAULT_API_URL = "https://api.github.com"
# The longest we sleep before a retry, whatever Retry-After or the rate-limit reset asks.
MAX_WAIT_S = 30.0
_TRANSIENT_STATUS = frozenset({502, 503, 504})
_NAME = r"[A-Za-z0-9_.-]+"
_REPO = re.compile(rf"^{_NAME}/{_NAME}$")
_SCP_REMOTE = re.compile(rf"^(?:[^@/\s]+@)?(?P<host>[^:/\s]{{2,}}):/?(?P<path>{_NAME}/{_NAME})/?$")
_NUMBER_IN_PATH = re.compile(r"/(?:issues|pulls)/(\d+)")
_MIN_REDACTED_LENGTH = 8  # shorter "tokens" (test values) would redact ordinary letters


class GitHubError(OrchestratorError):
    """A GitHub API request failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:  # keep the status when pickled into Prefect results
        return (type(self), (str(self), self.status))


class GitHub:
    """One repository on GitHub (or GitHub Enterprise, with ``api_url`` = https://HOST/api/v3).

    ``token_env`` names the environment variable the token came from; it is
    used only to say where to look when GitHub refuses the token.
    """

    def __init__(
        self,
        repo: str,
        token: str | None,
        api_url: str = DEFAULT_API_URL,
        timeout_s: float = 20,
        retries: int = 2,
        backoff_s: float = 1.0,
        token_env: str = "GITHUB_TOKEN",
    ) -> None:
        if not _REPO.match(repo):
            raise GitHubError(f"GitHub repository {repo!r} is not of the form 'owner/name'")
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise GitHubError(f"GitHub API URL {api_url!r} is not an http(s) URL")
        self.repo = repo
        self.api_url = api_url.rstrip("/")
        self._origin = (parts.scheme, parts.netloc)
        self._login: str | None = None
        self._token = token
        self._token_env = token_env
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "orchestrator",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(headers=headers, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> GitHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- issues ---------------------------------------------------------------

    def open_issues(self, label: str) -> list[Issue]:
        """Open issues carrying ``label``, oldest first (pull requests left out)."""
        params = {
            "state": "open",
            "labels": label,
            "per_page": "100",
            "sort": "created",
            "direction": "asc",
        }
        path = f"/repos/{self.repo}/issues"
        found = [_parse(IssueJSON, item, "GET", path) for item in self._pages(path, params)]
        # GitHub lists pull requests as issues too: they are the items with that key.
        return [item.issue() for item in found if "pull_request" not in item.model_fields_set]

    def comment(self, number: int, body: str) -> None:
        """Add a comment to issue (or pull request) ``number``."""
        self._request("POST", f"/repos/{self.repo}/issues/{number}/comments", json={"body": body})

    def close_issue(self, number: int) -> None:
        """Close issue ``number`` as completed."""
        payload = {"state": "closed", "state_reason": "completed"}
        self._request("PATCH", f"/repos/{self.repo}/issues/{number}", json=payload)

    def add_labels(self, number: int, labels: list[str]) -> None:
        """Add ``labels`` to issue (or pull request) ``number``, keeping its others."""
        path = f"/repos/{self.repo}/issues/{number}/labels"
        self._request("POST", path, json={"labels": list(labels)})

    # -- pull requests --------------------------------------------------------

    def find_pull(self, head: str) -> PullRequest | None:
        """The newest pull request from branch ``head`` of this repository, open or closed."""
        owner = self.repo.split("/")[0]
        params = {"head": f"{owner}:{head}", "state": "all", "sort": "created", "direction": "desc"}
        path = f"/repos/{self.repo}/pulls"
        found = self._json("GET", path, params=params)
        if not isinstance(found, list) or not found:
            return None
        return _pull(found[0], "GET", path)

    def open_pull(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a pull request merging branch ``head`` into ``base``."""
        payload = {"title": title, "head": head, "base": base, "body": body}
        path = f"/repos/{self.repo}/pulls"
        return _pull(self._json("POST", path, json=payload), "POST", path)

    def pull(self, number: int) -> PullRequest:
        """Pull request ``number`` as it is now."""
        path = f"/repos/{self.repo}/pulls/{number}"
        return _pull(self._json("GET", path), "GET", path)

    def merge(self, number: int, method: str, head_sha: str) -> str:
        """Merge pull request ``number`` (``method``: merge, squash or rebase) if its head is still
        ``head_sha``; the commit it made on the base. GitHub refuses with 405 (not mergeable now)
        or 409 (the head moved): a GitHubError with that status."""
        path = f"/repos/{self.repo}/pulls/{number}/merge"
        answer = self._json("PUT", path, json={"merge_method": method, "sha": head_sha})
        return _parse(MergeJSON, answer, "PUT", path).sha

    def checks(self, sha: str) -> list[Check]:
        """The CI results on commit ``sha``: its check runs, then its commit statuses."""
        path = f"/repos/{self.repo}/commits/{sha}"
        runs = _parse(CheckRunsJSON, self._json("GET", f"{path}/check-runs", params={"per_page": "100"}),
                      "GET", f"{path}/check-runs")
        statuses = _parse(CombinedStatusJSON, self._json("GET", f"{path}/status"), "GET", f"{path}/status")
        return [r.check() for r in runs.check_runs] + [s.check() for s in statuses.statuses]

    def job_log(self, job_id: int, tail_chars: int = 6000) -> str:
        """The end of a GitHub Actions job's log (GitHub answers with a redirect to the file)."""
        path = f"/repos/{self.repo}/actions/jobs/{job_id}/logs"
        text = self._request("GET", path, follow_redirects=True).text
        return text[-tail_chars:]

    def login(self) -> str:
        """The login the token acts as: its comments are ours. Asked once per client (a sync
        reads the comments of every pull request in review)."""
        if self._login is None:
            self._login = _parse(UserJSON, self._json("GET", "/user"), "GET", "/user").login
        return self._login

    def review_comments(self, number: int) -> list[Comment]:
        """Reviews asking for changes, then comments on lines, of pull request ``number``, oldest first."""
        path = f"/repos/{self.repo}/pulls/{number}"
        reviews = [_parse(ReviewJSON, r, "GET", f"{path}/reviews") for r in self._pages(f"{path}/reviews", {})]
        lines = [_parse(CommentJSON, c, "GET", f"{path}/comments") for c in self._pages(f"{path}/comments", {})]
        return ([r.comment() for r in reviews if r.state == "CHANGES_REQUESTED"]
                + [c.comment() for c in lines])

    def reply(self, number: int, comment_id: int, body: str) -> None:
        """Answer a comment on a line of pull request ``number`` in its thread."""
        self._request("POST", f"/repos/{self.repo}/pulls/{number}/comments/{comment_id}/replies", json={"body": body})

    # -- transport --------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        return self._decode(method, path, self._request(method, path, params=params, json=json))

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        """The answer's JSON; a GitHubError when it is none (a proxy's page, a wrong api_url)."""
        try:
            return response.json()
        except ValueError as exc:
            raise GitHubError(
                f"GitHub {method} {path}: {response.status_code} but the answer is not JSON; "
                f"check that {self.api_url} is GitHub's API",
                response.status_code,
            ) from exc

    def _pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a listing, following the Link header's rel="next"."""
        items: list[dict[str, Any]] = []
        url: str | None = self.api_url + path
        query: dict[str, str] | None = params
        while url:
            response = self._request("GET", path, url=url, params=query)
            page = self._decode("GET", path, response)
            if not isinstance(page, list):
                raise GitHubError(
                    f"GitHub GET {path}: the answer is not a list", response.status_code
                )
            items.extend(item for item in page if isinstance(item, dict))
            url, query = response.links.get("next", {}).get("url"), None
            if url and (urlsplit(url).scheme, urlsplit(url).netloc) != self._origin:
                # Following it would send the token to another host.
                raise GitHubError(f"GitHub GET {path}: next page is on another host: {url}")
        return items

    def _request(
        self,
        method: str,
        path: str,
        *,
        url: str | None = None,
        params: dict[str, str] | None = None,
        json: Any = None,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """Send one request, retrying transient failures; raise GitHubError on failure."""

        def send() -> httpx.Response:
            return self._client.request(
                method, url or self.api_url + path, params=params, json=json, follow_redirects=follow_redirects
            )

        # MAX_WAIT_S is read on each request, not at import: tests shorten it.
        policy = RetryPolicy(attempts=self._retries + 1, base_s=self._backoff_s, cap_s=MAX_WAIT_S)
        try:
            response = call(send, policy, _transient)
        except httpx.HTTPError as exc:  # one that outlasted the retries, or not worth one
            raise self._transport_error(method, path, exc) from exc
        if not response.is_success:
            raise self._status_error(method, path, response)
        return response

    def _transport_error(self, method: str, path: str, exc: httpx.HTTPError) -> GitHubError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not connect"
        detail = _one_line(str(exc)) or type(exc).__name__
        return GitHubError(
            self._redact(
                f"GitHub {method} {path}: {kind} ({detail}); "
                f"check the network and that {self.api_url} is GitHub's API"
            )
        )

    def _status_error(self, method: str, path: str, response: httpx.Response) -> GitHubError:
        status = response.status_code
        payload = ErrorJSON.read(response)
        said = _one_line(payload.message or response.reason_phrase or "")
        details = "; ".join(error_text(e) for e in payload.errors or [])
        text = f"GitHub {method} {path}: {status} {said}".rstrip()
        if details:
            text += f" ({_one_line(details)})"
        hint = self._hint(status, path, response)
        return GitHubError(self._redact(f"{text}; {hint}" if hint else text), status)

    def _hint(self, status: int, path: str, response: httpx.Response) -> str:
        """What to do about a refused request, where that is clear."""
        env = self._token_env
        if status == 401:
            if not self._token:
                return f"no token was given: set {env} in the environment"
            return f"check the token in the environment variable {env} (valid, not expired)"
        if status == 404:
            number = _NUMBER_IN_PATH.search(path)
            which = f", that #{number.group(1)} exists" if number else ""
            who = f"the token in {env}" if self._token else f"an anonymous request (set {env})"
            return f"check the repository name {self.repo!r}{which} and that {who} can see it"
        headers = response.headers
        limited = "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
        if status == 429 or (status == 403 and limited):
            return "GitHub's rate limit was reached; try again later"
        if status == 403:
            return f"check that the token in {env} may write issues and pulls of {self.repo}"
        if status >= 500:
            return "GitHub is having trouble; try again later"
        return ""

    def _redact(self, text: str) -> str:
        if self._token and len(self._token) >= _MIN_REDACTED_LENGTH:
            text = text.replace(self._token, "[redacted]")
        return text


# -- reading answers, deciding on retries -----------------------------------------

_Model = TypeVar("_Model", bound=WireModel)


def _parse(model: type[_Model], item: Any, method: str, path: str) -> _Model:
    """``item`` read as ``model``; a GitHubError when GitHub's answer has another shape."""
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        raise GitHubError(
            f"GitHub {method} {path}: unexpected answer ({where}: {first['msg']}); "
            "check that the API URL is GitHub's API"
        ) from exc


def _pull(item: Any, method: str, path: str) -> PullRequest:
    if not isinstance(item, dict):
        raise GitHubError(f"GitHub answered a pull request request with {type(item).__name__}")
    return _parse(PullJSON, item, method, path).pull()


def _transient(outcome: httpx.Response | Exception) -> Again | None:
    """Whether a request's outcome is worth another try (see :func:`retry.call`)."""
    if isinstance(outcome, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return Again()
    if isinstance(outcome, httpx.Response) and not outcome.is_success:
        return _rate_wait(outcome)
    return None  # a success, or an error no retry fixes (a bad URL, a proxy)


def _rate_wait(response: httpx.Response) -> Again | None:
    """How long a refused request asks to wait; None when the refusal is final."""
    status, headers = response.status_code, response.headers
    retry_after = retry_after_s(headers.get("retry-after"))
    exhausted = headers.get("x-ratelimit-remaining") == "0"
    if status == 403 and retry_after is None and not exhausted:
        return None  # a plain refusal: the token may not do this
    if status not in (403, 429) and status not in _TRANSIENT_STATUS:
        return None
    if retry_after is None and exhausted:
        reset = _float(headers.get("x-ratelimit-reset"))
        retry_after = reset - time.time() if reset is not None else None
    # None: the policy's backoff; a wait longer than MAX_WAIT_S is cut to it.
    return Again(retry_after)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def repo_from_remote(url: str) -> str | None:
    """The "owner/name" of a GitHub remote URL, or None when the URL does not say (a local path).

    Understands ``git@host:owner/name.git``, ``https://host/owner/name(.git)``
    and ``ssh://git@host[:port]/owner/name.git``.
    """
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh") or not parts.hostname:
            return None
        path = parts.path
    else:
        match = _SCP_REMOTE.match(url.removesuffix(".git")) if "\\" not in url else None
        if not match:
            return None
        path = match.group("path")
    path = path.strip("/").removesuffix(".git")
    return path if _REPO.match(path) else None
