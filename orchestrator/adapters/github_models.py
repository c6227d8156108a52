"""GitHub's REST answers as the orchestrator reads them, and what it makes of them.

:class:`Issue` and :class:`PullRequest` are what callers get; the ``*JSON``
models are the parts of GitHub's answers that are read, so a missing or
mistyped field is one validation error instead of a ``KeyError`` somewhere.
Unknown keys are ignored: GitHub adds fields all the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "Check",
    "CheckRunsJSON",
    "CombinedStatusJSON",
    "Comment",
    "CommentJSON",
    "ErrorDetail",
    "ErrorJSON",
    "Issue",
    "IssueJSON",
    "MergeJSON",
    "PullJSON",
    "PullRequest",
    "ReviewJSON",
    "UserJSON",
    "WireModel",
    "error_text",
]


@dataclass(frozen=True)
class Issue:
    """An open issue: a piece of backlog."""

    number: int
    title: str
    body: str
    url: str  # html_url: the page a person opens
    labels: tuple[str, ...]


@dataclass(frozen=True)
class PullRequest:
    """A pull request and whether it was merged."""

    number: int
    url: str  # html_url
    state: str  # "open" | "closed"
    merged: bool
    # None until merged: before that GitHub fills the field with a throwaway test merge.
    merge_commit_sha: str | None
    head: str  # head branch name
    head_sha: str = ""
    # GitHub's word on merging it: "clean" when nothing stands in the way (approved where the
    # repository requires it, required checks green, no conflict); "" when not told (listings).
    mergeable_state: str = ""


@dataclass(frozen=True)
class Check:
    """One CI result on a commit: a check run or a commit status."""

    name: str
    state: str  # "pending", "success" or "failure"
    url: str  # where a person reads it
    output: str  # what it said: a check run's title, summary and text, a status's description
    job_id: int | None = None  # a GitHub Actions job: its log tells more than its output


@dataclass(frozen=True)
class Comment:
    """What a reviewer said on a pull request: a review's body, or an inline comment on a line."""

    id: int
    author: str
    association: str  # OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, ...
    body: str
    path: str = ""  # an inline comment's file and line
    line: int | None = None
    review: bool = False  # a review that asked for changes (it cannot be replied to in a thread)


class WireModel(BaseModel):
    """Base of GitHub's answers: unknown keys ignored, numbers accepted where text is read."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class _Label(WireModel):
    """A label as an issue carries it (GitHub sends objects; some fakes send bare names)."""

    name: str | None = None


class IssueJSON(WireModel):
    """One item of ``GET /repos/{repo}/issues``."""

    number: int
    title: str | None = None
    body: str | None = None
    html_url: str | None = None
    labels: list[_Label | str] | None = None
    pull_request: Any = None  # only its presence counts: the item is a pull request

    def issue(self) -> Issue:
        """The issue as callers see it: missing text is empty, labels are their names."""
        labels = tuple(
            label if isinstance(label, str) else label.name or "" for label in self.labels or []
        )
        return Issue(self.number, self.title or "", self.body or "", self.html_url or "", labels)


class _Ref(WireModel):
    """A pull request's ``head`` or ``base``: its branch name and commit."""

    ref: str | None = None
    sha: str | None = None


class PullJSON(WireModel):
    """A pull request, as ``GET/POST /repos/{repo}/pulls[/{number}]`` answer it."""

    number: int
    html_url: str | None = None
    state: str | None = None
    merged: bool | None = None
    merged_at: str | None = None
    merge_commit_sha: str | None = None
    head: _Ref | None = None
    mergeable_state: str | None = None

    def pull(self) -> PullRequest:
        """The pull request as callers see it."""
        # Listings carry merged_at but no "merged"; the single-pull answer carries both.
        merged = bool(self.merged or self.merged_at)
        return PullRequest(
            number=self.number,
            url=self.html_url or "",
            state=self.state or "",
            merged=merged,
            merge_commit_sha=self.merge_commit_sha if merged and self.merge_commit_sha else None,
            head=(self.head.ref if self.head else None) or "",
            head_sha=(self.head.sha if self.head else None) or "",
            mergeable_state=self.mergeable_state or "",
        )


# Check run conclusions that ask for a fix; the rest (success, neutral, skipped, cancelled, stale) do not.
_FAILED = {"failure", "timed_out", "startup_failure"}


class _App(WireModel):
    slug: str | None = None


class _Output(WireModel):
    title: str | None = None
    summary: str | None = None
    text: str | None = None


class CheckRunJSON(WireModel):
    """A check run, as ``GET /repos/{repo}/commits/{sha}/check-runs`` lists it."""

    id: int
    name: str = ""
    status: str | None = None  # queued, in_progress, completed
    conclusion: str | None = None
    html_url: str | None = None
    details_url: str | None = None
    output: _Output | None = None
    app: _App | None = None

    def check(self) -> Check:
        state = "pending" if self.status != "completed" else "failure" if self.conclusion in _FAILED else "success"
        out = self.output or _Output()
        said = "\n\n".join(part.strip() for part in (out.title, out.summary, out.text) if part and part.strip())
        actions = self.app is not None and self.app.slug == "github-actions"
        return Check(name=self.name, state=state, url=self.html_url or self.details_url or "", output=said,
                     job_id=self.id if actions else None)


class CheckRunsJSON(WireModel):
    check_runs: list[CheckRunJSON] = []


class StatusJSON(WireModel):
    """One commit status (the older API other CI services post to)."""

    context: str = ""
    state: str = ""  # pending, success, failure, error
    description: str | None = None
    target_url: str | None = None

    def check(self) -> Check:
        state = {"success": "success", "failure": "failure", "error": "failure"}.get(self.state, "pending")
        return Check(name=self.context, state=state, url=self.target_url or "", output=self.description or "")


class CombinedStatusJSON(WireModel):
    """``GET /repos/{repo}/commits/{sha}/status``: the latest status of each context."""

    statuses: list[StatusJSON] = []


class UserJSON(WireModel):
    login: str = ""


class ReviewJSON(WireModel):
    """One item of ``GET /repos/{repo}/pulls/{number}/reviews``."""

    id: int
    user: UserJSON | None = None
    state: str = ""  # APPROVED, CHANGES_REQUESTED, COMMENTED, ...
    body: str | None = None
    author_association: str = ""

    def comment(self) -> Comment:
        return Comment(id=self.id, author=self.user.login if self.user else "", association=self.author_association,
                       body=self.body or "", review=True)


class CommentJSON(WireModel):
    """One item of ``GET /repos/{repo}/pulls/{number}/comments``: a comment on a line of the diff."""

    id: int
    user: UserJSON | None = None
    body: str | None = None
    path: str | None = None
    line: int | None = None
    original_line: int | None = None
    author_association: str = ""

    def comment(self) -> Comment:
        return Comment(id=self.id, author=self.user.login if self.user else "", association=self.author_association,
                       body=self.body or "", path=self.path or "", line=self.line or self.original_line)


class MergeJSON(WireModel):
    """What ``PUT /repos/{repo}/pulls/{number}/merge`` answers when it merged."""

    sha: str
    merged: bool = True


class ErrorDetail(WireModel):
    """One entry of a 422's ``errors``."""

    message: str | None = None
    resource: str | None = None
    field: str | None = None
    code: str | None = None


class ErrorJSON(WireModel):
    """What GitHub says with a refusal: ``{"message": ..., "errors": [...]}``."""

    message: str | None = None
    errors: list[ErrorDetail | str | Any] | None = None

    @classmethod
    def read(cls, response: httpx.Response) -> ErrorJSON:
        """The refusal's payload; empty when it is not one (a proxy's page, say)."""
        try:
            return cls.model_validate(response.json())
        except (ValueError, ValidationError):  # not JSON, or not this shape
            return cls()


def error_text(error: ErrorDetail | Any) -> str:
    """One entry of a 422's ``errors``: its message, or what field was wrong."""
    if not isinstance(error, ErrorDetail):
        return str(error)
    if error.message:
        return error.message
    where = ".".join(part for part in (error.resource, error.field) if part)
    return f"{where} {error.code or 'invalid'}".strip()
