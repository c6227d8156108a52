"""Where a cycle's time goes: spans written to a file when asked for.

With ``ORCH_TIMINGS=<file>`` in the environment, every step, agent session,
wait for an agent slot, git command and test or lint run appends one JSON
line to that file: its kind, a label, and its start and end on the
machine's monotonic clock (the clock every process on the machine shares,
so spans of several processes line up), and the step it happened in. ``bench/`` reads them; without the
variable a span costs one dictionary lookup.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

ENV = "ORCH_TIMINGS"
_step: ContextVar[str] = ContextVar("orch_timing_step", default="")


@contextmanager
def span(kind: str, label: str = "", **extra: Any) -> Iterator[None]:
    """Time the block as one span of ``kind`` when timings are on."""
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    start = time.monotonic()
    # Spans inside a step name it: steps of several tasks overlap in time.
    token = _step.set(label) if kind == "step" else None
    try:
        yield
    finally:
        if token is not None:
            _step.reset(token)
        mark(kind, label, start, time.monotonic(), path, **extra)


def mark(kind: str, label: str, start: float, end: float, path: str | None = None, **extra: Any) -> None:
    """Record a span whose start and end were taken elsewhere."""
    path = path or os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"kind": kind, "label": label, "start": start, "end": end, "pid": os.getpid(),
                       "step": _step.get(), **extra})
    # One write of one line on an O_APPEND descriptor: lines of threads and processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Every span recorded in ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
