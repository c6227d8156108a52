"""A Slack-style incoming webhook on loopback, for tests of notifications.

    with WebhookReceiver() as hook:
        deliver(hook.url, notice)
        body = hook.wait_for(lambda b: b["event"] == "cycle_failed")

Every JSON object POSTed to :attr:`WebhookReceiver.url` is recorded in
:attr:`WebhookReceiver.received`, including those answered with a failure, so
the number of bodies is the number of tries. Like Slack, it answers ``ok``
with 200, ``invalid_payload`` with 400 when the body is not a JSON object, and
404 on any other path (recording nothing).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from orchestrator.demo.loopback import LoopbackServer, QuietHandler

HOOK_PATH = "/hooks/T000/B000/secret"
"""The path a Slack webhook URL has; its last part is the secret logs must not show."""


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: str | None


class WebhookReceiver(LoopbackServer):
    """The receiver, running in a background thread while in use."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._changed = threading.Condition()
        self._received: list[dict[str, Any]] = []
        self._failures: list[_Failure] = []
        self._listen(_handler_for(self), host, port)

    @property
    def url(self) -> str:
        """The webhook URL to post to (``http://127.0.0.1:PORT/hooks/T000/B000/secret``)."""
        return f"{self.base_url}{HOOK_PATH}"

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every body posted so far, in arrival order (a copy)."""
        with self._changed:
            return list(self._received)

    def fail_next(self, status: int, count: int = 1, *, retry_after: str | None = None) -> None:
        """Answer the next ``count`` posts with ``status`` (and a Retry-After header if given)."""
        with self._changed:
            self._failures.extend([_Failure(status, retry_after)] * count)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10
    ) -> dict[str, Any]:
        """The first received body that matches; TimeoutError if none comes in time."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for body in self._received:
                    if predicate(body):
                        return body
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching webhook body within {timeout_s} s "
                        f"({len(self._received)} received)"
                    )
                self._changed.wait(remaining)

    def _take(self, body: dict[str, Any]) -> _Failure | None:
        """Record a body; the failure it is to be answered with, if one is queued."""
        with self._changed:
            self._received.append(body)
            self._changed.notify_all()
            return self._failures.pop(0) if self._failures else None


def _handler_for(hook: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            if self.path != HOOK_PATH:
                self._answer(404, "no_service")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self._answer(400, "invalid_payload")
                return
            failure = hook._take(body)
            if failure is None:
                self._answer(200, "ok")
            else:
                self._answer(failure.status, "failed_on_purpose", failure.retry_after)

        def _answer(self, status: int, text: str, retry_after: str | None = None) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            if retry_after is not None:
                self.send_header("retry-after", retry_after)
            self.end_headers()
            self.wfile.write(data)

    return Handler
