"""Webhook notifications in Slack's incoming-webhook format.

A cycle that finished or failed, a paused project, an approval a person must
give, a budget that ran out: each becomes a :class:`Notice`, which
:func:`payload` turns into the JSON a Slack incoming webhook (or anything that
speaks its format) accepts, and :func:`deliver` posts.

Delivery is best effort. It retries what may pass on a second try, logs every
failed try, and never raises: a broken webhook must not fail the cycle it
reports on. Webhook URLs carry their secret in the path, so logs name only the
host.

    notice = Notice(Event.cycle_finished, "calc", "Cycle 1a2b finished: merged 2, rejected 1")
    if not deliver(url, notice):
        ...  # already logged; nothing else to do
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx

from orchestrator.adapters.retry import Again, RetryPolicy, call, retry_after_s

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0
"""The longest pause between tries, whether from backoff or a 429's Retry-After."""

# Slack's limits (https://api.slack.com/reference/block-kit/blocks): longer
# texts or more fields make it reject the whole message with a 400.
_SECTION_TEXT_MAX = 3000
_FIELD_TEXT_MAX = 2000
_FIELDS_PER_SECTION = 10

# A module-level name so tests can record the pauses instead of waiting them out.
_sleep = time.sleep


class Event(StrEnum):
    """What happened; the value is what the payload's ``event`` key carries."""

    cycle_finished = "cycle_finished"
    cycle_failed = "cycle_failed"
    project_paused = "project_paused"
    approval_needed = "approval_needed"
    budget_reached = "budget_reached"
    rate_limited = "rate_limited"
    ci_failed = "ci_failed"  # on a pull request of ours, with on_ci_failure "notify"
    needs_human = "needs_human"  # CI still fails after max_ci_fix_attempts rounds


EMOJI: dict[Event, str] = {
    Event.cycle_finished: ":white_check_mark:",
    Event.cycle_failed: ":x:",
    Event.project_paused: ":double_vertical_bar:",
    Event.approval_needed: ":raised_hand:",
    Event.budget_reached: ":moneybag:",
    Event.rate_limited: ":hourglass:",
    Event.ci_failed: ":rotating_light:",
    Event.needs_human: ":sos:",
}
"""The Slack emoji code that opens each event's message."""


@dataclass(frozen=True)
class Notice:
    """One notification, before it is formatted for a webhook."""

    event: Event
    project: str
    title: str
    """One line saying what happened, e.g. ``Cycle 1a2b finished: merged 2, rejected 1``."""
    details: dict[str, str] = field(default_factory=dict)
    """Label to value, shown as fields in this order and sent as they are under ``details``."""
    link: str = ""
    """Where to read more (a dashboard or Prefect run page); left out when empty."""


def payload(notice: Notice) -> dict[str, Any]:
    """The Slack incoming-webhook JSON for a notice.

    ``text`` is the one-line fallback Slack shows in notifications,
    ``blocks`` the formatted message; ``event``, ``project`` and ``details``
    are for receivers that are not Slack (Slack ignores unknown keys).
    """
    emoji = EMOJI[notice.event]
    # The fallback text is one line even if the title was not.
    title = _escape(" ".join(notice.title.split()))
    project = _escape(notice.project)
    blocks: list[dict[str, Any]] = [
        _section(f"{emoji} *{title}*\nProject *{project}*"),
    ]
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{_escape(key)}*\n{_escape(value)}", _FIELD_TEXT_MAX)}
        for key, value in notice.details.items()
    ]
    for start in range(0, len(fields), _FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + _FIELDS_PER_SECTION]})
    if notice.link:
        blocks.append(_section(f"<{_link_target(notice.link)}|Open>"))
    return {
        "text": f"{emoji} [{project}] {title}",
        "blocks": blocks,
        "event": notice.event.value,
        "project": notice.project,
        "details": dict(notice.details),
    }


def deliver(
    url: str,
    notice: Notice,
    *,
    attempts: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 10.0,
) -> bool:
    """POST the notice's payload to a webhook; True once it answered 2xx.

    Refused connections, timeouts, 5xx and 429 are tried again, up to
    ``attempts`` tries in all, pausing ``backoff_s`` and doubling each time
    (a 429's Retry-After instead, when it gives one); other answers are final.
    Never raises: each failed try is logged as a warning, and a notice that
    could not be delivered returns False.
    """
    host = _host(url)
    try:
        return _deliver(url, host, notice, attempts, backoff_s, timeout_s)
    except Exception as exc:  # the promise is "never raises": even a bug here must not fail a cycle
        log.warning(
            "webhook %s for project %s to %s failed unexpectedly (%s: %s); not delivered",
            notice.event.value,
            notice.project,
            host,
            type(exc).__name__,
            _redact(str(exc), url, host),
        )
        return False


async def adeliver(
    url: str,
    notice: Notice,
    *,
    attempts: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 10.0,
) -> bool:
    """:func:`deliver` in a worker thread, so a flow's event loop keeps running meanwhile."""
    # Not abandoned on cancel: a cancelled flow waits at most for the tries in
    # progress, and the thread never outlives the loop that started it.
    send = functools.partial(
        deliver, url, notice, attempts=attempts, backoff_s=backoff_s, timeout_s=timeout_s
    )
    return await anyio.to_thread.run_sync(send)


# -- delivery ------------------------------------------------------------------


@dataclass(frozen=True)
class _Try:
    """How one POST went."""

    delivered: bool
    retry: bool = False
    reason: str = ""
    wait_s: float | None = None  # what the server asked for (Retry-After), if anything


def _deliver(
    url: str, host: str, notice: Notice, attempts: int, backoff_s: float, timeout_s: float
) -> bool:
    body = payload(notice)
    policy = RetryPolicy(attempts=max(1, attempts), base_s=backoff_s, cap_s=MAX_WAIT_S)
    tries: list[_Try] = []

    def post() -> _Try:
        tries.append(_post(client, url, host, body))
        return tries[-1]

    def failed(number: int, outcome: _Try | Exception, wait_s: float) -> None:
        _log_failure(notice, host, number, policy, outcome, f"trying again in {wait_s:.2f} s")

    with httpx.Client(timeout=timeout_s) as client:
        # _sleep is looked up on each delivery: tests record the pauses instead.
        last = call(post, policy, _again, sleep=_sleep, on_retry=failed)
    if not last.delivered:
        _log_failure(notice, host, len(tries), policy, last, "not delivered")
    return last.delivered


def _again(outcome: _Try | Exception) -> Again | None:
    """A failed try worth another, with the wait the server asked for (a 429's Retry-After)."""
    if isinstance(outcome, _Try) and not outcome.delivered and outcome.retry:
        return Again(outcome.wait_s)
    return None  # delivered, final, or a bug (raised to deliver's catch-all)


def _log_failure(
    notice: Notice,
    host: str,
    number: int,
    policy: RetryPolicy,
    outcome: _Try | Exception,
    then: str,
) -> None:
    reason = outcome.reason if isinstance(outcome, _Try) else repr(outcome)
    log.warning(
        "webhook %s for project %s to %s: try %d of %d failed (%s); %s",
        notice.event.value,
        notice.project,
        host,
        number,
        policy.attempts,
        reason,
        then,
    )


def _post(client: httpx.Client, url: str, host: str, body: dict[str, Any]) -> _Try:
    try:
        response = client.post(url, json=body)
    except httpx.TimeoutException:
        return _Try(delivered=False, retry=True, reason="timed out")
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        # The URL itself is wrong; no second try will fix it.
        return _Try(delivered=False, reason=f"unusable URL: {_redact(str(exc), url, host)}")
    except httpx.TransportError as exc:
        reason = f"{type(exc).__name__}: {_redact(str(exc), url, host)}"
        return _Try(delivered=False, retry=True, reason=reason)
    status = response.status_code
    if response.is_success:
        return _Try(delivered=True)
    # Slack answers errors with a short code ("invalid_payload", "no_service"): worth logging.
    said = " ".join(response.text.split())[:120]
    reason = f"HTTP {status}" + (f" {_redact(said, url, host)}" if said else "")
    if status == 429:
        wait_s = retry_after_s(response.headers.get("retry-after"))
        return _Try(delivered=False, retry=True, reason=reason, wait_s=wait_s)
    return _Try(delivered=False, retry=status >= 500, reason=reason)


# -- formatting ------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, _SECTION_TEXT_MAX)}}


def _escape(text: str) -> str:
    """Slack mrkdwn control characters, escaped as Slack asks (&, <, > only)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_target(url: str) -> str:
    # Inside <url|label>, "|" and ">" would end the URL early; "&" is an entity there too.
    return url.replace("&", "&amp;").replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _host(url: str) -> str:
    """The host (and port) of a URL: all of it that is safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
    except ValueError:  # a malformed IPv6 literal
        return "?"
    try:
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is no number, or out of range
        return host


def _redact(text: str, url: str, host: str) -> str:
    """Text with the URL's secret parts (its path and query) taken out."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    # "/" alone is no secret, and replacing it (or "") would garble the text.
    secrets = [secret for secret in (parts.path, parts.query) if len(secret) > 1]
    if secrets:
        text = text.replace(url, host)
    for secret in secrets:
        text = text.replace(secret, "…")
    return text
