"""What a measured cycle spent its wall time on.

Every moment between the start of ``orch run`` and its exit is given to one
component, the first of these that was busy at that moment:

1. ``model``: a request to the (scripted) model was being answered;
2. ``tests``: a test or lint command of the project was running;
3. ``git``: a git command was running;
4. ``CLI start-up``: an agent session had started and its CLI had not yet
   sent its first request;
5. ``CLI tools``: a session's CLI was running tools between responses, or
   exiting;
6. ``start-up``: before the flow's body began (Python, imports, Prefect's
   flow run, and the ephemeral server when one is started);
7. ``shutdown``: after the flow's body returned;
8. ``Prefect + orchestrator``: anything else (task runs, result storage,
   artifacts, slots, the store, the audit trail).

The components therefore add up to the wall time exactly. The overhead is
the wall time less the critical path (see :func:`chain_turns`); ``model``
time beyond the critical path is part of it (sessions that start apart).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.demo.scripted import RecordedRequest, peak_overlap

COMPONENTS = ("model", "tests", "git", "CLI start-up", "CLI tools", "start-up", "shutdown",
              "Prefect + orchestrator")
STEPS = ("plan", "work", "baseline", "judge", "ahead", "merge")

Interval = tuple[float, float]


@dataclass
class Figures:
    """The measured figures of one run of ``orch run``."""

    wall_s: float
    critical_path_s: float
    chain_turns: int
    components: dict[str, float]
    steps: dict[str, float]
    requests: int
    in_flight: dict[str, int]  # role -> the most of its requests answered at once
    sessions: dict[str, int]  # role -> the most of its agent sessions alive at once
    test_runs: dict[str, int]  # step -> test/lint command runs inside it
    peak_rss_mib: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.wall_s / self.critical_path_s if self.critical_path_s else None

    @property
    def overhead_s(self) -> float:
        return self.wall_s - self.critical_path_s


def chain_turns(requests: list[RecordedRequest]) -> int:
    """Model responses on the longest chain: the planner, then the slowest task's worker and judge.

    A cycle's steps run planner first, then each task's worker and judge one
    after the other, tasks side by side, then the resolver of a conflicting
    merge; responses of one session come one after another.
    """
    answered = [r for r in requests if r.status == 200]
    planner = sum(1 for r in answered if r.role == "planner")
    per_task: dict[str, int] = defaultdict(int)
    for r in answered:
        if r.role in ("worker", "judge") and r.task:
            per_task[r.task] += 1
    resolver = sum(1 for r in answered if r.role == "resolver")
    return planner + max(per_task.values(), default=0) + resolver


def union_length(intervals: Iterable[Interval]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def attribute(start: float, end: float, layers: list[tuple[str, list[Interval]]]) -> dict[str, float]:
    """Give each moment of [start, end] to the first layer busy at it; the rest to the last name."""
    edges: list[tuple[float, int, int]] = []  # (time, +1/-1, layer index)
    for index, (_, intervals) in enumerate(layers):
        for a, b in intervals:
            a, b = max(a, start), min(b, end)
            if b > a:
                edges += [(a, 1, index), (b, -1, index)]
    edges.sort()
    busy = [0] * len(layers)
    totals = dict.fromkeys([name for name, _ in layers], 0.0)
    rest = 0.0
    at = start
    for time, step, index in edges:
        first = next((i for i, n in enumerate(busy) if n > 0), None)
        if first is None:
            rest += time - at
        else:
            totals[layers[first][0]] += time - at
        busy[index] += step
        at = time
    rest += end - at
    return {**totals, "rest": rest}


def measure(
    spawned: float, exited: float, spans: list[dict[str, Any]], requests: list[RecordedRequest],
    latency_s: float,
) -> Figures:
    """The figures of one ``orch run`` from its spans and the model's record."""
    def of(kind: str, label: str | None = None) -> list[Interval]:
        return [(s["start"], s["end"]) for s in spans
                if s["kind"] == kind and (label is None or s["label"] == label)]

    first_request: dict[str, float] = {}
    for r in requests:
        first_request[r.session_id] = min(r.started, first_request.get(r.session_id, r.started))
    cli_start, cli_rest = [], []
    for s in spans:
        if s["kind"] == "agent":
            first = min(first_request.get(s["session_id"], s["end"]), s["end"])
            cli_start.append((s["start"], first))
            cli_rest.append((first, s["end"]))
    flow = of("flow") or [(spawned, exited)]
    flow_start, flow_end = min(a for a, _ in flow), max(b for _, b in flow)
    requests = [r for r in requests if spawned <= r.started <= exited]
    model = [(r.started, r.finished) for r in requests]
    shares = attribute(spawned, exited, [
        ("model", model), ("tests", of("check")), ("git", of("git")),
        ("CLI start-up", cli_start), ("CLI tools", cli_rest),
        ("start-up", [(spawned, flow_start)]), ("shutdown", [(flow_end, exited)]),
    ])
    shares["Prefect + orchestrator"] = shares.pop("rest")
    steps = {name: union_length(of("step", name)) for name in STEPS}
    test_runs = {name: sum(1 for s in spans if s["kind"] == "check" and s["step"] == name) for name in STEPS}
    rss = [s["peak_kib"] for s in spans if s["kind"] == "rss"]
    turns = chain_turns(requests)
    return Figures(
        wall_s=exited - spawned, critical_path_s=turns * latency_s, chain_turns=turns,
        components=shares, steps=steps, requests=len(model),
        in_flight={role: peak_overlap((r.started, r.finished) for r in requests if r.role == role)
                   for role in ("worker", "judge")},
        sessions={role: peak_overlap((s["start"], s["end"]) for s in spans if s["kind"] == "agent" and s["label"] == role)
                  for role in ("worker", "judge")},
        test_runs=test_runs, peak_rss_mib=max(rss) / 1024 if rss else None,
    )
