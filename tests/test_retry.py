"""The retry helper: the policy's pauses, the Retry-After parser, the sync and async loops.

Pauses are recorded by an injected sleep instead of waited out; one test
per loop sleeps for real, for a few milliseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
import pytest

from orchestrator.adapters.retry import Again, RetryPolicy, acall, call, retry_after_s

NOW = 1_800_000_000.0  # a fixed "now" for HTTP dates


class Flaky:
    """Fails (raising or returning "busy") a set number of times, then returns "done"."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            if self.error is not None:
                raise self.error
            return "busy"
        return "done"

    async def acall(self) -> str:
        return self()


def busy(outcome: str | Exception) -> Again | None:
    """Retry "busy" results and ConnectionErrors with the policy's backoff."""
    return Again() if outcome == "busy" or isinstance(outcome, ConnectionError) else None


def asking(wait_s: float) -> Callable[[str | Exception], Again | None]:
    """Retry "busy" results with the wait the other side asked for."""
    return lambda outcome: Again(wait_s) if outcome == "busy" else None


# -- the policy ------------------------------------------------------------------


def test_the_pause_grows_by_the_factor() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.5, factor=2.0)
    assert [policy.delay_s(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_a_factor_of_one_keeps_the_pause() -> None:
    policy = RetryPolicy(base_s=0.02, factor=1.0)
    assert {policy.delay_s(n) for n in range(10)} == {0.02}


def test_the_pause_is_capped() -> None:
    policy = RetryPolicy(attempts=None, base_s=1.0, factor=2.0, cap_s=30.0)
    assert [policy.delay_s(n) for n in (3, 4, 5)] == [8.0, 16.0, 30.0]
    assert policy.delay_s(5000) == 30.0  # no overflow however long it runs


def test_jitter_adds_up_to_its_amount() -> None:
    policy = RetryPolicy(base_s=0.02, factor=1.0, jitter_s=0.05)
    assert policy.delay_s(3, rand=lambda: 0.0) == pytest.approx(0.02)
    assert policy.delay_s(3, rand=lambda: 0.5) == pytest.approx(0.045)
    assert all(0.02 <= policy.delay_s(0) < 0.07 for _ in range(200))


def test_jitter_stays_under_the_cap() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=1.5, jitter_s=1.0)
    assert policy.delay_s(0, rand=lambda: 0.99) == 1.5


def test_no_base_means_no_pause() -> None:
    assert RetryPolicy(base_s=0.0).delay_s(7) == 0.0


def test_asked_for_waits_are_kept_between_zero_and_the_cap() -> None:
    policy = RetryPolicy(cap_s=30.0)
    assert [policy.capped(s) for s in (-5.0, 0.0, 7.0, 3600.0)] == [0.0, 0.0, 7.0, 30.0]


@pytest.mark.parametrize(
    "fields",
    [{"attempts": 0}, {"base_s": -1.0}, {"factor": -2.0}, {"cap_s": -1.0}, {"jitter_s": -0.1}],
)
def test_a_policy_that_makes_no_sense_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(**fields)  # type: ignore[arg-type]


# -- Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header) == seconds


def test_retry_after_is_capped() -> None:
    assert retry_after_s("3600", cap_s=30.0) == 30.0
    assert retry_after_s("inf", cap_s=30.0) == 30.0


def test_retry_after_as_an_http_date() -> None:
    when = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=90)
    header = format_datetime(when, usegmt=True)  # e.g. "Fri, 15 Jan 2027 08:00:00 GMT"
    assert retry_after_s(header, now=lambda: NOW) == pytest.approx(90.0)
    assert retry_after_s(header, cap_s=30.0, now=lambda: NOW) == 30.0


def test_a_date_without_a_zone_is_gmt_and_a_past_one_is_now() -> None:
    when = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=60)
    naive = when.strftime("%a, %d %b %Y %H:%M:%S -0000")  # -0000: no zone given
    assert retry_after_s(naive, now=lambda: NOW) == pytest.approx(60.0)
    past = format_datetime(when - timedelta(hours=1), usegmt=True)
    assert retry_after_s(past, now=lambda: NOW) == 0.0


def test_retry_after_reads_the_real_clock_by_default() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = retry_after_s(soon)
    assert seconds is not None and 110 < seconds <= 120


# -- the loop ------------------------------------------------------------------------


def test_a_first_success_is_returned_without_a_pause() -> None:
    slept: list[float] = []
    assert call(Flaky(0), RetryPolicy(), busy, sleep=slept.append) == "done"
    assert slept == []


def test_failures_are_tried_again_with_the_backoff() -> None:
    flaky, slept = Flaky(2), []
    policy = RetryPolicy(attempts=4, base_s=0.01, factor=2.0)
    assert call(flaky, policy, busy, sleep=slept.append) == "done"
    assert flaky.calls == 3
    assert slept == [0.01, 0.02]


def test_the_last_result_is_returned_when_attempts_run_out() -> None:
    flaky, slept = Flaky(10), []
    assert call(flaky, RetryPolicy(attempts=3, base_s=1.0), busy, sleep=slept.append) == "busy"
    assert flaky.calls == 3
    assert slept == [1.0, 2.0]  # no pause after the last try


def test_the_last_exception_is_raised_as_it_was() -> None:
    error = ConnectionError("refused")
    flaky = Flaky(10, error)
    with pytest.raises(ConnectionError) as info:
        call(flaky, RetryPolicy(attempts=2, base_s=0.0), busy, sleep=lambda s: None)
    assert info.value is error and flaky.calls == 2
    assert info.traceback[-1].name == "__call__"  # raised from where it happened


def test_an_exception_the_classifier_keeps_is_not_retried() -> None:
    flaky = Flaky(10, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        call(flaky, RetryPolicy(attempts=5), busy, sleep=lambda s: None)
    assert flaky.calls == 1


def test_an_interrupt_is_never_caught() -> None:
    flaky = Flaky(10, KeyboardInterrupt())  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        call(flaky, RetryPolicy(attempts=5), lambda outcome: Again(), sleep=lambda s: None)
    assert flaky.calls == 1


def test_an_asked_for_wait_replaces_the_backoff_and_is_capped() -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=3, base_s=1.0, cap_s=30.0)
    assert call(Flaky(1), policy, asking(7.0), sleep=slept.append) == "done"
    assert call(Flaky(1), policy, asking(3600.0), sleep=slept.append) == "done"
    assert call(Flaky(1), policy, asking(-1.0), sleep=slept.append) == "done"
    assert slept == [7.0, 30.0, 0.0]


def test_on_retry_hears_each_failed_try_but_the_last() -> None:
    heard: list[tuple[int, str | Exception, float]] = []
    policy = RetryPolicy(attempts=3, base_s=0.5, factor=1.0)
    result = call(Flaky(5), policy, busy, sleep=lambda s: None, on_retry=lambda *a: heard.append(a))
    assert result == "busy"
    assert heard == [(1, "busy", 0.5), (2, "busy", 0.5)]


def test_unbounded_attempts_go_on_until_the_classifier_stops() -> None:
    flaky, slept = Flaky(40), []
    policy = RetryPolicy(attempts=None, base_s=1.0, factor=1.0)
    assert call(flaky, policy, busy, sleep=slept.append) == "done"
    assert flaky.calls == 41 and slept == [1.0] * 40


def test_the_real_sleep_pauses() -> None:
    started = time.monotonic()
    assert call(Flaky(2), RetryPolicy(attempts=3, base_s=0.02, factor=1.0), busy) == "done"
    assert time.monotonic() - started >= 0.04


# -- the async loop --------------------------------------------------------------------


def test_the_async_loop_retries_like_the_sync_one() -> None:
    flaky, slept = Flaky(2, ConnectionError("reset")), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> str:
        return await acall(flaky.acall, RetryPolicy(attempts=3, base_s=0.01), busy, sleep=sleep)

    assert anyio.run(main) == "done"
    assert flaky.calls == 3 and slept == [0.01, 0.02]


def test_the_async_loop_raises_the_last_exception() -> None:
    flaky = Flaky(5, ConnectionError("reset"))

    async def main() -> str:
        return await acall(flaky.acall, RetryPolicy(attempts=2, base_s=0.0), busy)

    with pytest.raises(ConnectionError, match="reset"):
        anyio.run(main)
    assert flaky.calls == 2


def test_the_async_loop_pauses_with_anyio_and_can_be_cancelled() -> None:
    flaky = Flaky(math.inf)  # type: ignore[arg-type]  # busy for ever

    async def main() -> float:
        started = time.monotonic()
        with anyio.move_on_after(0.1):
            await acall(flaky.acall, RetryPolicy(attempts=None, base_s=0.02, factor=1.0), busy)
        return time.monotonic() - started

    assert anyio.run(main) < 1.0
    assert 2 <= flaky.calls <= 6
