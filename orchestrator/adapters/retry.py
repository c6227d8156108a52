"""Trying an operation again: one policy, one Retry-After parser, one loop.

The agent runtime (transient model API errors), the GitHub client (5xx,
rate limits), webhook delivery (5xx, 429) and the agent-slot requests
(a busy SQLite Prefect server, a full pool) all retry through here. What
differs between them is only *which* outcomes are worth another try and how
long the other side asked to wait; each caller says that in a classifier:

    def transient(outcome: httpx.Response | Exception) -> Again | None:
        if isinstance(outcome, httpx.TransportError):
            return Again()  # the policy's backoff
        if isinstance(outcome, httpx.Response) and outcome.status_code == 429:
            return Again(retry_after_s(outcome.headers.get("retry-after")))
        return None  # keep it: return the response, or raise the exception

    response = call(lambda: client.get(url), RetryPolicy(attempts=4), transient)
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

import anyio

T = TypeVar("T")

__all__ = ["Again", "RetryPolicy", "acall", "call", "retry_after_s"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try and how long to pause between tries.

    The pause after the try numbered ``attempt`` (0 for the first) is
    ``base_s * factor**attempt`` plus up to ``jitter_s`` at random, and never
    more than ``cap_s``.
    """

    attempts: int | None = 3
    """Tries in all, the first included; None = until the classifier gives up."""
    base_s: float = 1.0
    """The pause after the first failed try."""
    factor: float = 2.0
    """What each next pause is multiplied by (1 keeps the pauses equal)."""
    cap_s: float = math.inf
    """The longest pause, whether from the backoff or from what the other side asked for."""
    jitter_s: float = 0.0
    """A random extra of up to this many seconds, so callers that failed together spread out."""

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"a retry policy needs at least one attempt, not {self.attempts}")
        if min(self.base_s, self.factor, self.cap_s, self.jitter_s) < 0:
            raise ValueError(f"a retry policy's pauses cannot be negative: {self}")

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to pause after the try numbered ``attempt`` (0-based) failed."""
        try:
            backoff = self.base_s * self.factor**attempt if self.base_s else 0.0
        except OverflowError:  # a long unbounded run: the cap decides
            backoff = math.inf
        jitter = self.jitter_s * rand() if self.jitter_s else 0.0
        return float(min(backoff + jitter, self.cap_s))

    def capped(self, wait_s: float) -> float:
        """A pause the other side asked for, kept between 0 and ``cap_s``."""
        return float(max(0.0, min(wait_s, self.cap_s)))

    def numbers(self) -> Iterable[int]:
        """The tries' 0-based numbers."""
        return range(self.attempts) if self.attempts is not None else itertools.count()


@dataclass(frozen=True)
class Again:
    """A classifier's answer for an outcome worth another try."""

    wait_s: float | None = None
    """What the other side asked to wait (capped by the policy); None = the policy's backoff."""


Classifier = Callable[[T | Exception], Again | None]
"""Given a try's result or exception: ``Again`` to try once more, None to keep it."""
RetryHook = Callable[[int, T | Exception, float], None]
"""Told before each pause: the 1-based number of the try that failed, its outcome, the pause."""


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    classify: Classifier[T],
    *,
    sleep: Callable[[float], object] = time.sleep,
    on_retry: RetryHook[T] | None = None,
) -> T:
    """Call ``fn`` until ``classify`` keeps its outcome or the policy's attempts run out.

    The last outcome is returned, or raised when it was an exception (with its
    own traceback). Only ``Exception`` is caught: cancellation and
    ``KeyboardInterrupt`` end the loop at once.
    """
    for attempt in policy.numbers():
        try:
            result = fn()
        except Exception as exc:
            wait_s = _pause(policy, attempt, classify(exc))
            if wait_s is None:
                raise
            outcome: T | Exception = exc
        else:
            wait_s = _pause(policy, attempt, classify(result))
            if wait_s is None:
                return result
            outcome = result
        if on_retry is not None:
            on_retry(attempt + 1, outcome, wait_s)
        sleep(wait_s)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def acall(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    classify: Classifier[T],
    *,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    on_retry: RetryHook[T] | None = None,
) -> T:
    """:func:`call` for a coroutine function; pauses with ``anyio.sleep`` (cancellable)."""
    for attempt in policy.numbers():
        try:
            result = await fn()
        except Exception as exc:
            wait_s = _pause(policy, attempt, classify(exc))
            if wait_s is None:
                raise
            outcome: T | Exception = exc
        else:
            wait_s = _pause(policy, attempt, classify(result))
            if wait_s is None:
                return result
            outcome = result
        if on_retry is not None:
            on_retry(attempt + 1, outcome, wait_s)
        await sleep(wait_s)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _pause(policy: RetryPolicy, attempt: int, again: Again | None) -> float | None:
    """The pause before the next try, or None when this outcome is the last."""
    if again is None or (policy.attempts is not None and attempt + 1 >= policy.attempts):
        return None
    return policy.delay_s(attempt) if again.wait_s is None else policy.capped(again.wait_s)


def retry_after_s(
    value: str | None, cap_s: float = math.inf, now: Callable[[], float] = time.time
) -> float | None:
    """A Retry-After header as seconds from now, between 0 and ``cap_s``; None if absent or unreadable.

    The header is a number of seconds or an HTTP date (a date in the past
    means now). A date without a zone is read as GMT, as HTTP dates are.
    """
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now()
    if math.isnan(seconds):
        return None
    return float(max(0.0, min(seconds, cap_s)))
