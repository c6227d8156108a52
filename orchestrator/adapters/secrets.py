"""Secrets in the environment never reach what the orchestrator writes.

The values of environment variables whose names say they are secret (API
keys, tokens, passwords), and those the configuration makes secret, are
replaced by ``[redacted]`` wherever outside text enters: test and lint
output, what agents return, error details. The audit trail and the store
redact again on the way out, so a path missed on the way in still writes
nothing secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)
_MIN_LENGTH = 8  # shorter values ("1", "true") would redact ordinary words
REDACTED = "[redacted]"
# Values the configuration makes secret whatever their variable's name: the
# project's GitHub token, webhook URLs, agent_env entries marked secret.
_remembered: set[str] = set()


def distinctive(value: str) -> bool:
    """Whether a value is long enough to be told apart from ordinary text."""
    return len(value) >= _MIN_LENGTH


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name says its value is secret."""
    return bool(_SECRET_NAME.search(name))


def remember(values: Iterable[str]) -> None:
    """Redact these values too, from now on (in this process)."""
    _remembered.update(v for v in values if distinctive(v))


def secret_env() -> dict[str, str]:
    """The environment variables whose names look secret and whose values are distinctive."""
    return {k: v for k, v in os.environ.items() if looks_secret(k) and distinctive(v)}


def secret_values() -> list[str]:
    """The current secret values, longest first (so no part of one is left behind)."""
    return sorted(set(secret_env().values()) | _remembered, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret value replaced."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_all(value: Any) -> Any:
    """Redact every string inside nested dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v) for v in value)
    return value
