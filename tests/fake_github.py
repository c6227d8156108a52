"""A fake of the GitHub REST endpoints ``orchestrator.adapters.github`` uses, on loopback.

The real client talks real HTTP to this server, which keeps issues and pull
requests in memory and, when given a bare repository as ``remote``, checks
branches against it and merges pull requests into it with real git. Like
GitHub it numbers issues and pull requests from one counter, lists pull
requests among the issues (with a ``pull_request`` key), pages listings with
a Link header, and answers 401 without the right token.

    with FakeGitHub(token="t", remote=bare) as gh:
        number = gh.add_issue("Add greeting")
        GitHub(gh.repo, "t", api_url=gh.api_url).close_issue(number)
        assert gh.issues[number]["state"] == "closed"
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from orchestrator.demo.loopback import LoopbackServer, QuietHandler

Answer = tuple[int, Any, dict[str, str]]  # status, JSON payload, extra headers
Query = dict[str, str]

_GIT_CONFIG = ["user.name=Fake GitHub", "user.email=noreply@fake.github", "commit.gpgsign=false"]
_REPO = r"/repos/(?P<repo>[^/]+/[^/]+)"


class FakeGitHub(LoopbackServer):
    """The fake server, running in a daemon thread while in use."""

    def __init__(
        self,
        token: str | None = "test-token",
        remote: Path | None = None,
        repo: str = "acme/widgets",
        prefix: str = "/api/v3",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token  # None: anonymous requests are welcome
        self.remote = remote
        self.repo = repo
        self.prefix = prefix.rstrip("/")
        self.issues: dict[int, dict[str, Any]] = {}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.check_runs: dict[str, list[dict[str, Any]]] = {}  # by commit sha
        self.statuses: dict[str, list[dict[str, Any]]] = {}  # by commit sha
        self.job_logs: dict[int, str] = {}
        self.login = "orch-bot"  # the user the token acts as
        self.reviews: dict[int, list[dict[str, Any]]] = {}  # by pull request number
        self.review_comments: dict[int, list[dict[str, Any]]] = {}  # by pull request number
        self.requests: list[tuple[str, str]] = []  # (method, path below the API prefix)
        self.last_headers: dict[str, str] = {}
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._next_number = 1
        self._lock = threading.RLock()
        self._listen(_handler_for(self), host, port)
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Answer]]] = [
            ("GET", re.compile(rf"^{_REPO}/issues$"), self._list_issues),
            ("PATCH", re.compile(rf"^{_REPO}/issues/(?P<n>\d+)$"), self._edit_issue),
            ("POST", re.compile(rf"^{_REPO}/issues/(?P<n>\d+)/comments$"), self._comment),
            ("POST", re.compile(rf"^{_REPO}/issues/(?P<n>\d+)/labels$"), self._add_labels),
            ("GET", re.compile(rf"^{_REPO}/pulls$"), self._list_pulls),
            ("POST", re.compile(rf"^{_REPO}/pulls$"), self._create_pull),
            ("GET", re.compile(rf"^{_REPO}/pulls/(?P<n>\d+)$"), self._get_pull),
            ("PUT", re.compile(rf"^{_REPO}/pulls/(?P<n>\d+)/merge$"), self._merge_via_api),
            ("GET", re.compile(rf"^{_REPO}/commits/(?P<sha>[0-9a-f]+)/check-runs$"), self._check_runs),
            ("GET", re.compile(rf"^{_REPO}/commits/(?P<sha>[0-9a-f]+)/status$"), self._combined_status),
            ("GET", re.compile(rf"^{_REPO}/actions/jobs/(?P<id>\d+)/logs$"), self._job_log_redirect),
            ("GET", re.compile(rf"^{_REPO}/_raw/job-logs/(?P<id>\d+)$"), self._job_log),
            ("GET", re.compile(rf"^{_REPO}/pulls/(?P<n>\d+)/reviews$"), self._list_reviews),
            ("GET", re.compile(rf"^{_REPO}/pulls/(?P<n>\d+)/comments$"), self._list_review_comments),
            ("POST", re.compile(rf"^{_REPO}/pulls/(?P<n>\d+)/comments/(?P<id>\d+)/replies$"), self._reply),
        ]

    @property
    def url(self) -> str:
        """Where the web pages would be: http://127.0.0.1:PORT."""
        return self.base_url

    @property
    def api_url(self) -> str:
        """The REST API's root, with a path prefix as on GitHub Enterprise."""
        return self.url + self.prefix

    @property
    def owner(self) -> str:
        return self.repo.split("/")[0]

    # -- seeding and steering -----------------------------------------------

    def add_issue(self, title: str, body: str = "", labels: tuple[str, ...] = ("orch",)) -> int:
        """Open an issue; returns its number."""
        with self._lock:
            number = self._take_number()
            self.issues[number] = {
                "title": title,
                "body": body,
                "state": "open",
                "state_reason": None,
                "labels": list(labels),
                "comments": [],
                "html_url": f"{self.url}/{self.repo}/issues/{number}",
            }
            return number

    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        ratelimit_reset_s: float | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status``.

        ``retry_after`` sends a Retry-After header; ``ratelimit_reset_s`` sends
        ``x-ratelimit-remaining: 0`` and a reset that many seconds from now.
        """
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if ratelimit_reset_s is not None:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-reset"] = f"{time.time() + ratelimit_reset_s:.3f}"
        with self._lock:
            self._failures.extend([(status, headers)] * count)

    def heal(self) -> None:
        """Drop the failures still queued by :meth:`fail_next`."""
        with self._lock:
            self._failures.clear()

    def head_of(self, number: int) -> str:
        """The commit at the head of pull request ``number``'s branch in ``remote``."""
        with self._lock:
            return str(self._pull_json(number)["head"]["sha"])

    def add_check_run(self, sha: str, name: str, conclusion: str | None, log: str | None = None,
                      output: str = "") -> int:
        """A check run on ``sha`` (``conclusion`` None: still running). With ``log``, it is a
        GitHub Actions job whose log that is; else another app's, saying ``output``."""
        with self._lock:
            run_id = self._take_number() + 1000
            self.check_runs.setdefault(sha, []).append({
                "id": run_id, "name": name, "status": "in_progress" if conclusion is None else "completed",
                "conclusion": conclusion, "html_url": f"{self.url}/{self.repo}/runs/{run_id}",
                "output": {"title": name, "summary": output, "text": None},
                "app": {"slug": "github-actions" if log is not None else "other-ci"},
            })
            if log is not None:
                self.job_logs[run_id] = log
            return run_id

    def add_review(self, number: int, author: str, association: str, state: str, body: str) -> int:
        """A review of pull request ``number`` (state APPROVED, CHANGES_REQUESTED or COMMENTED)."""
        with self._lock:
            review_id = self._take_number() + 5000
            self.reviews.setdefault(number, []).append({
                "id": review_id, "user": {"login": author}, "author_association": association, "state": state,
                "body": body})
            return review_id

    def add_review_comment(self, number: int, author: str, association: str, body: str, path: str,
                           line: int, in_reply_to: int | None = None) -> int:
        """A comment on a line of pull request ``number``'s diff (or a reply in its thread)."""
        with self._lock:
            comment_id = self._take_number() + 7000
            self.review_comments.setdefault(number, []).append({
                "id": comment_id, "user": {"login": author}, "author_association": association, "body": body,
                "path": path, "line": line, "in_reply_to_id": in_reply_to})
            return comment_id

    def add_status(self, sha: str, context: str, state: str, description: str = "") -> None:
        """A commit status on ``sha`` (the older API): pending, success, failure or error."""
        with self._lock:
            self.statuses.setdefault(sha, []).append({
                "context": context, "state": state, "description": description,
                "target_url": f"{self.url}/ci/{context}"})

    def set_mergeable(self, number: int, state: str) -> None:
        """What GitHub says of merging pull request ``number``: "clean", "blocked", "dirty", ..."""
        with self._lock:
            self.pulls[number]["mergeable_state"] = state

    def merge_pull(self, number: int, method: str = "merge") -> str:
        """Merge pull request ``number`` in ``remote`` as GitHub's merge button does; the new sha.

        ``method``: a merge commit, one squashed commit, or the head's commits rebased on the base.
        """
        with self._lock:
            pull = self.pulls[number]
            if self.remote is None or pull["state"] != "open":
                raise RuntimeError(f"pull #{number} cannot be merged (no remote, or not open)")
            head, base = pull["head"], pull["base"]
        with tempfile.TemporaryDirectory(prefix="fake-github-merge-") as tmp:
            work = Path(tmp) / "clone"
            _git(Path(tmp), "clone", "-q", str(self.remote), str(work))
            _git(work, "checkout", "-q", base)
            message = f"Merge pull request #{number} from {self.owner}/{head}"
            if method == "squash":
                _git(work, "merge", "-q", "--squash", f"origin/{head}")
                _git(work, "commit", "-q", "-m", f"{pull['title']} (#{number})")
            elif method == "rebase":
                _git(work, "checkout", "-q", "-B", "rebased", f"origin/{head}")
                _git(work, "rebase", "-q", base)
                _git(work, "checkout", "-q", base)
                _git(work, "merge", "-q", "--ff-only", "rebased")
            else:
                _git(work, "merge", "-q", "--no-ff", "-m", message, f"origin/{head}")
            _git(work, "push", "-q", "origin", base)
            sha = _git(work, "rev-parse", "HEAD").strip()
        with self._lock:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            pull.update(state="closed", merged=True, merge_commit_sha=sha, merged_at=now)
        return sha

    def close_pull(self, number: int) -> None:
        """Close pull request ``number`` without merging it."""
        with self._lock:
            self.pulls[number]["state"] = "closed"

    # -- request handling ---------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: Any) -> Answer:
        """Answer one request (called by the HTTP handler's threads)."""
        parts = urlsplit(target)
        path = parts.path.removeprefix(self.prefix) if parts.path.startswith(self.prefix) else ""
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.requests.append((method, path or parts.path))
            self.last_headers = dict(headers)
            if self._failures:
                status, extra = self._failures.pop(0)
                return status, {"message": HTTPStatus(status).phrase}, extra
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"message": "Bad credentials"}, {}
            if method == "GET" and path == "/user":
                return 200, {"login": self.login}, {}
            for route_method, pattern, answer in self._routes:
                match = pattern.match(path)
                if match and route_method == method:
                    if match.group("repo") != self.repo:
                        break
                    return answer(match, query, body, path)
            return 404, {"message": "Not Found"}, {}

    def _take_number(self) -> int:
        number, self._next_number = self._next_number, self._next_number + 1
        return number

    def _item(self, match: re.Match[str]) -> dict[str, Any] | None:
        number = int(match.group("n"))
        return self.issues.get(number) or self.pulls.get(number)

    def _issue_json(self, number: int) -> dict[str, Any]:
        item = self.issues.get(number) or self.pulls[number]
        shown = {
            "number": number,
            "title": item["title"],
            "body": item["body"],
            "state": item["state"],
            "state_reason": item.get("state_reason"),
            "html_url": item["html_url"],
            "labels": [{"name": name} for name in item["labels"]],
            "comments": len(item["comments"]),
        }
        if number in self.pulls:
            shown["pull_request"] = {"html_url": item["html_url"]}
        return shown

    def _list_issues(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        wanted = {name for name in query.get("labels", "").split(",") if name}
        numbers = [
            n
            for n in sorted({*self.issues, *self.pulls})
            if _state_matches(self._issue_json(n)["state"], query)
            and wanted <= set((self.issues.get(n) or self.pulls[n])["labels"])
        ]
        if query.get("direction", "desc") == "desc":
            numbers.reverse()
        return self._page([self._issue_json(n) for n in numbers], query, path)

    def _edit_issue(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        item = self._item(match)
        if item is None:
            return 404, {"message": "Not Found"}, {}
        for key in ("title", "body", "state", "state_reason"):
            if key in body and (key in item or key != "state_reason"):
                item[key] = body[key]
        return 200, self._issue_json(int(match.group("n"))), {}

    def _comment(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        item = self._item(match)
        if item is None:
            return 404, {"message": "Not Found"}, {}
        if not body.get("body"):
            return _invalid("body is missing")
        item["comments"].append(body["body"])
        return 201, {"id": len(item["comments"]), "body": body["body"]}, {}

    def _add_labels(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        item = self._item(match)
        if item is None:
            return 404, {"message": "Not Found"}, {}
        for name in body.get("labels", []):
            if name not in item["labels"]:
                item["labels"].append(name)
        return 200, [{"name": name} for name in item["labels"]], {}

    def _pull_json(self, number: int, single: bool = True) -> dict[str, Any]:
        pull = self.pulls[number]
        shown = {
            "number": number,
            "html_url": pull["html_url"],
            "state": pull["state"],
            "title": pull["title"],
            "body": pull["body"],
            "head": {"ref": pull["head"], "label": f"{self.owner}:{pull['head']}"},
            "base": {"ref": pull["base"], "label": f"{self.owner}:{pull['base']}"},
            "merged_at": pull["merged_at"],
            "merge_commit_sha": pull["merge_commit_sha"],
        }
        if self.remote is not None and _has_branch(self.remote, pull["head"]):
            shown["head"]["sha"] = _git(self.remote, "rev-parse", pull["head"]).strip()
        if single:  # as on GitHub, listings carry merged_at but not "merged" or the merge state
            shown["merged"] = pull["merged"]
            shown["mergeable_state"] = pull.get("mergeable_state", "unknown")
        return shown

    def _merge_via_api(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        number = int(match.group("n"))
        pull = self.pulls.get(number)
        if pull is None:
            return 404, {"message": "Not Found"}, {}
        if pull["state"] != "open" or pull.get("mergeable_state") != "clean":
            return 405, {"message": "Pull Request is not mergeable"}, {}
        if body.get("sha") and body["sha"] != self._pull_json(number)["head"].get("sha"):
            return 409, {"message": "Head branch was modified. Review and try the merge again."}, {}
        sha = self.merge_pull(number, str(body.get("merge_method") or "merge"))
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}, {}

    def _list_pulls(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        head = query.get("head")
        numbers = [
            n
            for n in sorted(self.pulls)
            if _state_matches(self.pulls[n]["state"], query)
            and (head is None or head == f"{self.owner}:{self.pulls[n]['head']}")
        ]
        if query.get("direction", "desc") == "desc":
            numbers.reverse()
        return self._page([self._pull_json(n, single=False) for n in numbers], query, path)

    def _get_pull(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        number = int(match.group("n"))
        if number not in self.pulls:
            return 404, {"message": "Not Found"}, {}
        return 200, self._pull_json(number), {}

    def _create_pull(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        missing = [key for key in ("title", "head", "base") if not body.get(key)]
        if missing:
            return _invalid(*(f"{key} is missing" for key in missing))
        head = str(body["head"]).removeprefix(f"{self.owner}:")
        base = str(body["base"])
        if self.remote is not None:
            for field, branch in (("head", head), ("base", base)):
                if not _has_branch(self.remote, branch):
                    return _invalid(f"{field} branch '{branch}' does not exist in {self.repo}")
            if _git(self.remote, "rev-list", "--count", f"{base}..{head}").strip() == "0":
                return _invalid(f"No commits between {base} and {head}")
        for pull in self.pulls.values():
            if pull["state"] == "open" and pull["head"] == head and pull["base"] == base:
                return _invalid(f"A pull request already exists for {self.owner}:{head}.")
        number = self._take_number()
        self.pulls[number] = {
            "title": body["title"],
            "body": body.get("body") or "",
            "head": head,
            "base": base,
            "state": "open",
            "merged": False,
            "merged_at": None,
            "merge_commit_sha": None,
            "html_url": f"{self.url}/{self.repo}/pull/{number}",
            "labels": [],
            "comments": [],
        }
        return 201, self._pull_json(number), {}

    def _check_runs(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        runs = self.check_runs.get(match.group("sha"), [])
        return 200, {"total_count": len(runs), "check_runs": runs}, {}

    def _combined_status(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        statuses = self.statuses.get(match.group("sha"), [])
        states = {s["state"] for s in statuses}
        state = "failure" if states & {"failure", "error"} else "pending" if "pending" in states or not states else "success"
        return 200, {"state": state, "statuses": statuses}, {}

    def _job_log_redirect(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        # As GitHub does: a redirect to where the log file can be downloaded.
        job = int(match.group("id"))
        if job not in self.job_logs:
            return 404, {"message": "Not Found"}, {}
        return 302, {}, {"location": f"{self.api_url}/repos/{self.repo}/_raw/job-logs/{job}"}

    def _job_log(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        return 200, self.job_logs[int(match.group("id"))], {}  # plain text, not JSON

    def _list_reviews(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        return self._page(self.reviews.get(int(match.group("n")), []), query, path)

    def _list_review_comments(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        return self._page(self.review_comments.get(int(match.group("n")), []), query, path)

    def _reply(self, match: re.Match[str], query: Query, body: Any, path: str) -> Answer:
        number, parent = int(match.group("n")), int(match.group("id"))
        thread = self.review_comments.get(number, [])
        original = next((c for c in thread if c["id"] == parent), None)
        if original is None:
            return 404, {"message": "Not Found"}, {}
        if not body.get("body"):
            return _invalid("body is missing")
        reply = self.add_review_comment(number, self.login, "MEMBER", body["body"], original["path"],
                                        original["line"], in_reply_to=parent)
        return 201, {"id": reply, "body": body["body"]}, {}

    def _page(self, items: list[dict[str, Any]], query: Query, path: str) -> Answer:
        """One page of a listing, with a Link header when there are more."""
        per_page = min(max(_int(query.get("per_page"), 30), 1), 100)
        page = max(_int(query.get("page"), 1), 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            following = urlencode({**query, "page": str(page + 1)})
            headers["Link"] = f'<{self.api_url}{path}?{following}>; rel="next"'
        return 200, chunk, headers


def _state_matches(state: str, query: Query) -> bool:
    wanted = query.get("state", "open")
    return wanted == "all" or wanted == state


def _invalid(*messages: str) -> Answer:
    errors = [{"resource": "PullRequest", "code": "custom", "message": m} for m in messages]
    return 422, {"message": "Validation Failed", "errors": errors}, {}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` with a fixed identity; its stdout, or RuntimeError with its stderr."""
    config = [arg for setting in _GIT_CONFIG for arg in ("-c", setting)]
    done = subprocess.run(
        ["git", *config, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{cwd}: git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _has_branch(remote: Path, branch: str) -> bool:
    args = ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"]
    return subprocess.run(args, cwd=remote, capture_output=True, check=False).returncode == 0


def _handler_for(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._send(400, {"message": "Problems parsing JSON"}, {})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, payload, extra = fake.handle(method, self.path, headers, body)
            except Exception as exc:  # a bug in the fake: say so instead of hanging the client
                status, payload, extra = 500, {"message": f"fake GitHub failed: {exc}"}, {}
            self._send(status, payload, extra)

        def _send(self, status: int, payload: Any, extra: dict[str, str]) -> None:
            text = isinstance(payload, str)  # a file, such as a job's log
            data = payload.encode() if text else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain; charset=utf-8" if text else "application/json; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
