"""Webhook notifications: the Slack payload, and delivery to a loopback receiver."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
from webhook_receiver import HOOK_PATH, WebhookReceiver

from orchestrator.adapters import webhooks as notify
from orchestrator.adapters.webhooks import EMOJI, Event, Notice, adeliver, deliver, payload


def send(url: str, notice: Notice, attempts: int = 4) -> bool:
    """deliver with a tiny backoff, so retries take milliseconds."""
    return deliver(url, notice, attempts=attempts, backoff_s=0.01, timeout_s=5.0)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses deliver would make, recorded instead of waited out."""
    recorded: list[float] = []
    monkeypatch.setattr(notify, "_sleep", recorded.append)
    return recorded


def finished(**details: str) -> Notice:
    return Notice(
        Event.cycle_finished, "calc", "Cycle 1a2b finished: merged 2, rejected 1", details
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- payload -------------------------------------------------------------------


@pytest.mark.parametrize("event", list(Event))
def test_payload_per_event(event: Event) -> None:
    notice = Notice(event, "calc", "Something happened", {"cycle": "1a2b", "cost": "$0.42"})
    body = payload(notice)

    assert body["text"] == f"{EMOJI[event]} [calc] Something happened"
    assert body["event"] == event.value
    assert body["project"] == "calc"
    assert body["details"] == {"cycle": "1a2b", "cost": "$0.42"}
    head, fields = body["blocks"]
    assert head["type"] == "section"
    assert head["text"]["type"] == "mrkdwn"
    assert EMOJI[event] in head["text"]["text"]
    assert "Something happened" in head["text"]["text"]
    assert [f["text"] for f in fields["fields"]] == ["*cycle*\n1a2b", "*cost*\n$0.42"]


def test_every_event_has_its_own_emoji() -> None:
    assert set(EMOJI) == set(Event)
    assert len(set(EMOJI.values())) == len(Event)
    assert [e.value for e in Event] == [e.name for e in Event]


def test_payload_text_is_the_readable_line() -> None:
    body = payload(finished())
    assert body["text"] == ":white_check_mark: [calc] Cycle 1a2b finished: merged 2, rejected 1"


def test_payload_without_details_or_link_has_one_block() -> None:
    body = payload(finished())
    assert len(body["blocks"]) == 1
    assert body["details"] == {}


def test_payload_link_is_the_last_block() -> None:
    notice = Notice(Event.approval_needed, "calc", "Plan waits", link="http://dash/p?a=1&b=2")
    body = payload(notice)
    assert body["blocks"][-1]["text"]["text"] == "<http://dash/p?a=1&amp;b=2|Open>"
    assert "link" not in body


def test_payload_is_one_line_and_escaped_for_slack() -> None:
    notice = Notice(Event.cycle_failed, "a<b>", "Merge\nfailed & <stopped>", {"why": "x > y"})
    body = payload(notice)
    assert body["text"] == ":x: [a&lt;b&gt;] Merge failed &amp; &lt;stopped&gt;"
    assert body["blocks"][1]["fields"][0]["text"] == "*why*\nx &gt; y"
    # The machine-readable keys are as given.
    assert body["project"] == "a<b>"
    assert body["details"] == {"why": "x > y"}


def test_payload_keeps_within_slack_limits() -> None:
    details = {f"key{i}": "v" * 5000 for i in range(23)}
    body = payload(Notice(Event.budget_reached, "calc", "t" * 5000, details))
    sections = body["blocks"][1:]
    assert [len(s["fields"]) for s in sections] == [10, 10, 3]
    assert all(len(f["text"]) <= 2000 for s in sections for f in s["fields"])
    assert len(body["blocks"][0]["text"]["text"]) <= 3000


# -- delivery ------------------------------------------------------------------


def test_deliver_posts_the_payload(hook: WebhookReceiver) -> None:
    notice = finished(merged="2")
    assert send(hook.url, notice) is True
    body = hook.wait_for(lambda b: b["event"] == "cycle_finished")
    assert body == payload(notice)
    assert len(hook.received) == 1


def test_deliver_retries_5xx_then_succeeds(hook: WebhookReceiver, waits: list[float]) -> None:
    hook.fail_next(500, count=2)
    assert send(hook.url, finished()) is True
    assert len(hook.received) == 3
    assert waits == [0.01, 0.02]  # exponential backoff from backoff_s


def test_deliver_gives_up_after_attempts(
    hook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    hook.fail_next(503, count=10)
    with caplog.at_level(logging.WARNING, logger="orchestrator.adapters.webhooks"):
        assert send(hook.url, finished(), attempts=3) is False
    assert len(hook.received) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    host = hook.url.split("/")[2]
    for record in warnings:
        message = record.getMessage()
        assert "cycle_finished" in message
        assert "calc" in message
        assert host in message
        assert "secret" not in message
        assert HOOK_PATH not in message
    assert "not delivered" in warnings[-1].getMessage()


def test_deliver_does_not_retry_4xx(hook: WebhookReceiver) -> None:
    hook.fail_next(400, count=5)
    assert send(hook.url, finished()) is False
    assert len(hook.received) == 1


def test_deliver_honours_retry_after_on_429(hook: WebhookReceiver, waits: list[float]) -> None:
    hook.fail_next(429, retry_after="7")
    hook.fail_next(429, retry_after="3600")  # capped
    hook.fail_next(429)  # no header: the backoff
    assert send(hook.url, finished()) is True
    assert len(hook.received) == 4
    assert waits == [7.0, notify.MAX_WAIT_S, 0.04]


def test_deliver_to_a_closed_port_returns_false_quickly(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}{HOOK_PATH}"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="orchestrator.adapters.webhooks"):
        assert send(url, finished()) is False
    assert time.monotonic() - started < 2
    assert len(caplog.records) == 4  # refused connections are retried
    assert all("secret" not in r.getMessage() for r in caplog.records)


def test_deliver_retries_a_timeout() -> None:
    # A listening socket that never accepts: the kernel completes the
    # connection, and the answer never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}{HOOK_PATH}"
        started = time.monotonic()
        assert deliver(url, finished(), attempts=2, backoff_s=0.01, timeout_s=0.2) is False
        assert 0.4 <= time.monotonic() - started < 3


def test_deliver_to_a_malformed_url_returns_false() -> None:
    for url in ("", "not a url", "ftp://example.com/x", "http://[::1/x"):
        assert send(url, finished()) is False


def test_adeliver_keeps_the_event_loop_running(hook: WebhookReceiver) -> None:
    hook.fail_next(500)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async def main() -> bool:
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            delivered = await adeliver(hook.url, finished(), backoff_s=0.2, timeout_s=5.0)
            group.cancel_scope.cancel()
        return delivered

    assert anyio.run(main) is True
    assert len(hook.received) == 2
    assert ticks >= 5  # the loop ran while deliver paused for 0.2 s in its thread


def test_deliver_never_raises(
    hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"a bug that mentions {hook.url}")

    monkeypatch.setattr(httpx.Client, "post", broken)
    with caplog.at_level(logging.WARNING, logger="orchestrator.adapters.webhooks"):
        assert send(hook.url, finished()) is False
    assert "RuntimeError" in caplog.text
    assert "secret" not in caplog.text
