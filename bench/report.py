"""The benchmark's printout: figures per scenario, then each target and whether it is met."""

from __future__ import annotations

from dataclasses import dataclass

from .cpu import KINDS
from .reads import ReadFigures
from .resume import ResumeFigures
from .timeline import COMPONENTS, STEPS, Figures

RATIO_TARGETS = {3: 1.4, 8: 1.8}  # tasks -> most wall time per critical-path second
READ_TARGET_S = 0.5
SAMPLE_NAME = "sample project"  # the targets' ratios are the generated project's


@dataclass
class Cycle:
    tasks: int
    latency_s: float
    server: str
    figures: Figures
    project: str = SAMPLE_NAME  # or the real project it ran on

    @property
    def title(self) -> str:
        return f"{self.project}: {self.tasks} tasks, {self.latency_s:g} s per response, {self.server}"


def _cycle_lines(c: Cycle) -> list[str]:
    f = c.figures
    head = f"  wall {f.wall_s:.1f} s"
    if f.critical_path_s:
        head += (f", critical path {f.critical_path_s:.1f} s ({f.chain_turns} responses),"
                 f" ratio {f.ratio:.2f}, overhead {f.overhead_s:.1f} s")
    steps = ", ".join(f"{s} {f.steps[s]:.1f}" for s in STEPS if f.steps.get(s))
    parts = ", ".join(f"{k} {f.components[k]:.2f}" for k in COMPONENTS if f.components.get(k, 0) >= 0.005)
    runs = ", ".join(f"{s} {n}" for s, n in f.test_runs.items() if n)
    rss = f"{f.peak_rss_mib:.0f} MiB" if f.peak_rss_mib else "-"
    cpu = float(f.extra.get("cpu s", 0.0))
    by: dict[str, float] = f.extra.get("cpu by") or {}
    merged = int(f.extra.get("merged", 0))
    everything = cpu + (by.get("server", 0.0) if c.server == "running server" else 0.0)
    per_merged = f", {everything / merged:.1f} s per merged task ({merged}), the server's included" if merged else ""
    return [
        f"{c.title}",
        head,
        f"  steps (s, wall): {steps}",
        f"  components (s):  {parts}",
        f"  at once (of {c.tasks}): worker requests {f.in_flight['worker']}, judge requests {f.in_flight['judge']},"
        f" worker sessions {f.sessions['worker']}, judge sessions {f.sessions['judge']}",
        f"  requests {f.requests}; test runs: {runs}; peak RSS of orch run {rss};"
        f" servers started {f.extra.get('servers started', '-')}",
        f"  CPU {cpu:.1f} s (orch run and every process it waited for: CLIs, tests, git),"
        f" {cpu / c.tasks:.1f} s per task{per_merged}",
        "  CPU by component (s): " + ", ".join(f"{k} {by[k]:.1f}" for k in KINDS if k in by),
    ] + ([f"  {f.extra['outcome']}"] if f.extra.get("outcome") else [])


def _targets(cycles: list[Cycle], resume: ResumeFigures, reads: ReadFigures) -> list[tuple[str, str, bool]]:
    rows = []
    for c in cycles:
        f = c.figures
        if c.server == "running server" and c.latency_s and c.tasks in RATIO_TARGETS and c.project == SAMPLE_NAME:
            limit = RATIO_TARGETS[c.tasks]
            rows.append((f"{c.tasks} tasks, {c.latency_s:g} s: wall <= {limit} x critical path",
                         f"{f.ratio:.2f} x", (f.ratio or 0) <= limit))
    for c in cycles:
        f = c.figures
        if c.latency_s:
            rows.append((f"{c.title}: worker and judge requests all in flight at once",
                         f"{f.in_flight['worker']} and {f.in_flight['judge']} of {c.tasks} (sessions alive at once:"
                         f" {f.sessions['worker']} and {f.sessions['judge']})",
                         f.in_flight["worker"] >= c.tasks and f.in_flight["judge"] >= c.tasks))
    # The merged result's one run is the merge's own, or the run ahead of it that the merge took.
    merges = [c.figures.test_runs.get("merge", 0) + c.figures.test_runs.get("ahead", 0) for c in cycles
              if c.project == SAMPLE_NAME]  # a real project's main may be red: the merge then reads its failures
    rows.append(("sample project's merge: one test run for all passing branches (at the merge or ahead of it)",
                 f"{sorted(set(merges))} per cycle",
                 all(n == 1 for n in merges)))
    rows.append(("resume: no repeated request for a finished step",
                 f"{resume.repeated_for_finished_steps}", resume.repeated_for_finished_steps == 0))
    for name, seconds in reads.seconds.items():
        rows.append((f"{name} at {reads.tasks:,} tasks: < {READ_TARGET_S} s", f"{seconds:.2f} s",
                     seconds < READ_TARGET_S))
    rows.append(("read commands start no Prefect server", f"{reads.servers_started}", reads.servers_started == 0))
    started = [c.figures.extra.get("servers started", 0) for c in cycles if c.server == "running server"]
    rows.append(("orch run with a server running starts no other", f"{sum(started)} in {len(started)} runs",
                 sum(started) == 0))
    return rows


def render_cycles(cycles: list[Cycle]) -> str:
    lines = ["Cycles (orch run, from spawn to exit)", ""]
    for c in cycles:
        lines += [*_cycle_lines(c), ""]
    return "\n".join(lines)


def render(cycles: list[Cycle], resume: ResumeFigures, reads: ReadFigures) -> str:
    lines = [render_cycles(cycles)]
    r = resume
    lines += [
        "Resume: killed (SIGKILL) after half the workers finished, then orch run again",
        f"  killed after {r.killed_after_s:.1f} s with {r.workers_done_at_kill} workers done; requests: "
        f"{r.first_run_requests} before the kill + {r.second_run_requests} after = "
        f"{r.first_run_requests + r.second_run_requests} (an uninterrupted cycle asks {r.uninterrupted_requests})",
        f"  requests repeated for finished steps: {r.repeated_for_finished_steps}; sessions the kill cut that"
        f" resumed: {r.cut_sessions_resumed}; merged {r.merged} of 4",
        "",
        f"Read commands with {reads.tasks:,} tasks in the store (median wall time)",
        "  " + ", ".join(f"{name} {s:.2f} s" for name, s in reads.seconds.items()),
        "",
        "Targets",
    ]
    for name, measured, met in _targets(cycles, resume, reads):
        lines.append(f"  [{'met' if met else 'MISSED'}] {name}: {measured}")
    return "\n".join(lines)
