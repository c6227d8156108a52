"""``python -m bench soak``: ``orch start`` serving projects for minutes while faults are injected.

``orch start`` serves K generated projects (and toolz, a real project with its
own tests, when its snapshot is on this machine: see :mod:`bench.realrepos`)
on one-minute schedules against a Prefect server the soak owns and the
scripted model, which plans two new steps per cycle for ever. Meanwhile the soak breaks things, one at a time:
the API fails some requests and hangs on others (always); a Claude Code CLI is
killed mid-session; the Prefect server is restarted; ``orch start`` is
SIGKILLed and started again; a stale ``.git/index.lock`` sits in a user's
checkout for a while; a test command hangs past its timeout.

After every cycle and at the end it checks what a user relies on (see
:func:`invariants`) and prints each figure and each invariant; the exit
status is 1 if any invariant failed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deployments.server import Server, free_port, start_server
from orchestrator.adapters.leash import PROJECT_ENV, SESSION_ENV, marked
from orchestrator.adapters.portfolio_file import load_portfolio
from orchestrator.adapters.store import Store
from orchestrator.demo.scripted import (
    Fail,
    RecordedRequest,
    RequestView,
    Scenario,
    Script,
    ScriptedModel,
    structured,
)
from orchestrator.domain.models import TaskStatus
from tasks.slots import LEASE_S

from . import project as sample
from . import realrepos
from .project import Layout
from .runs import ORCH, base_env

STALL_S = 15  # agent_stall_seconds in the soak's projects: a hung request is cut after this
TEST_TIMEOUT_S = 20
OVERLOADED = Fail(529, "Overloaded")


@dataclass
class FaultyScenario(Scenario):
    """Endless small steps, with every ``fail_every``-th request failed and every ``hang_every``-th hung."""

    layouts: dict[str, Layout] = field(default_factory=dict)  # by project name; the sample's by default
    fail_every: int = 9
    hang_every: int = 37
    steps: dict[str, int] = field(default_factory=dict)  # the next step number of each project
    asked: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script_for(self, role: str, prompt: str) -> tuple[Script, str | None]:
        script, key = super().script_for(role, prompt)
        if role == "planner":
            script = sample.planner_turns(self._plan)
        elif role == "worker" and (found := re.search(r"Add step (\d+)\n", prompt)):
            step = int(found.group(1))
            script = self._per_project(lambda layout: sample.worker_script(step, layout))
            key = found.group(0).strip()
        elif role == "judge":
            script = self._per_project(sample.judge_script)
        return [self._faulty(t) for t in script], key

    @staticmethod
    def _project(view: RequestView) -> str:
        # Every session runs in a worktree: <project>/.orch/worktrees/<name>.
        return view.cwd.parents[2].name if view.cwd else "?"

    def _layout(self, view: RequestView) -> Layout:
        return self.layouts.get(self._project(view), sample.SAMPLE)

    def _per_project(self, script: Callable[[Layout], Script]) -> Script:
        """``script``'s turns, each written for the project of the session it answers."""
        def turn(k: int) -> Callable[[RequestView], Any]:
            def answer(view: RequestView) -> Any:
                chosen = script(self._layout(view))[k]
                return chosen(view) if callable(chosen) else chosen  # a turn may itself look at the request
            return answer
        return [turn(k) for k in range(len(script(sample.SAMPLE)))]

    def _plan(self, view: RequestView) -> list[dict]:
        project = self._project(view)
        with self.lock:
            first = self.steps.get(project, 1)
            self.steps[project] = first + 2
        return [structured(sample.plan([first, first + 1], "Two more steps.", self._layout(view)))]

    def _faulty(self, turn: Any) -> Callable[[RequestView], list[dict] | Fail]:
        def answer(view: RequestView) -> list[dict] | Fail:
            with self.lock:
                self.asked += 1
                count = self.asked
            if count % self.fail_every == 0:
                return OVERLOADED
            if count % self.hang_every == 0:
                time.sleep(STALL_S + 10)  # past the stall limit: the session was cut and goes on without it
                return OVERLOADED
            return turn(view) if callable(turn) else turn
        return answer


def make_portfolio(root: Path, projects: list[Path], layouts: dict[str, Layout]) -> Path:
    def test_command(project: Path) -> str:  # hangs while the soak's marker for the project exists
        command = layouts.get(project.name, sample.SAMPLE).test_command
        return f"if [ -e {root / 'hang'}-{project.name} ]; then sleep 600; fi; {command}"

    config = {
        "name": "soak", "data_dir": str(root / "data"), "max_total_workers": 4, "retention_days": 1,
        "projects": [{
            "name": p.name, "path": str(p), "max_workers": 2, "cycle_interval_minutes": 1,
            "test_command": test_command(p), "test_timeout_seconds": TEST_TIMEOUT_S,
            "agent_stall_seconds": STALL_S, "api_retries": 3, "api_retry_base_seconds": 1,
            "worker_timeout_seconds": 300, "max_task_attempts": 3, "max_consecutive_failures": 50,
        } for p in projects],
    }
    path = root / "portfolio.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


class OrchStart:
    """``orch start`` as a user runs it, in a process group of its own; restartable."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.groups: list[int] = []  # every incarnation's session (it leads its own): its processes are found by it

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([ORCH, "start", "-c", str(self.config)],
                                            env={**self.env, "PYTHONFAULTHANDLER": "1"}, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_as_in_a_terminal)
        self.groups.append(self.process.pid)

    def kill(self) -> None:
        """SIGKILL ``orch start`` alone, as a crash would; the runs it started go on as orphans."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self, timeout_s: float = 90) -> bool:
        """Ctrl+C, as a user stops it; True if it exited in time. If not, its threads' stacks go
        to its log (SIGABRT with the fault handler on), to say where it hung."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(30)
            return False


def _as_in_a_terminal() -> None:
    # Ctrl+C reaches it as in a terminal, however the soak itself was started: a background
    # job's children inherit SIGINT ignored, and `orch start` keeps an inherited ignore.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]


def _stat(pid: int, field: int) -> int | None:
    """A number from /proc/<pid>/stat, counted after the command name: 1 the parent, 3 the session."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[field])
    except (OSError, IndexError, ValueError):
        return None


def leftovers(groups: list[int], projects: list[Path]) -> list[int]:
    """Processes of any ``orch start`` incarnation, or marked as an agent session's of our projects."""
    sessions = {pid for p in projects for pid in marked(PROJECT_ENV, str(p))}
    return sorted(sessions | {pid for pid in _pids() if _stat(pid, 3) in groups})


def clis(projects: list[Path]) -> list[int]:
    """Running Claude Code CLIs of agent sessions (not their leashes) in ``projects``."""
    found = []
    for pid in (pid for p in projects for pid in marked(PROJECT_ENV, str(p))):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:  # it ended meanwhile
            continue
        if command.endswith(b"claude"):
            found.append(pid)
    return found


def session_of(pid: int) -> str:
    """The agent session a CLI runs ('' if it is gone)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    mark = f"{SESSION_ENV}=".encode()
    return next((e[len(mark):].decode() for e in environ if e.startswith(mark)), "")


def wait_for_agents(projects: list[Path], timeout_s: float = 90) -> bool:
    """Wait until an agent session is at work in one of ``projects``: faults should hit work."""
    deadline = time.monotonic() + timeout_s
    while not clis(projects):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@dataclass
class Sample:
    at: float
    incarnation: int
    rss_kib: int
    fds: int
    runs: int  # flow runs in flight (its child processes): each holds pipes and connections
    kinds: dict[str, int] = field(default_factory=dict)  # open files by kind: socket, pipe, file...


def sample_process(pid: int, incarnation: int) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        kinds: dict[str, int] = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):  # closed since
                kind = os.readlink(f"/proc/{pid}/fd/{fd}").split(":")[0]
                kind = kind if kind in ("socket", "pipe", "anon_inode") else "file"
                kinds[kind] = kinds.get(kind, 0) + 1
    except OSError:
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    runs = sum(1 for child in _pids() if _stat(child, 1) == pid)
    return Sample(time.monotonic(), incarnation, rss, sum(kinds.values()), runs, kinds)


def growth(samples: list[Sample], warm_up_s: float) -> tuple[float, float, float] | None:
    """RSS and open-file growth (%) over the longest incarnation after warm-up, and its span (s).

    None when too short to tell: fewer than 6 samples after warm-up, or no
    number of runs in flight seen in both its halves.
    """
    by_run: dict[int, list[Sample]] = {}
    for s in samples:
        by_run.setdefault(s.incarnation, []).append(s)
    longest = max(by_run.values(), key=lambda run: run[-1].at - run[0].at, default=[])
    settled = [s for s in longest if s.at - longest[0].at >= warm_up_s]
    half = len(settled) // 2
    early, late = settled[:half], settled[-half:]
    # Compared at one load: each run in flight holds pipes, a connection and memory while it
    # runs, so the figures follow the load; a leak raises them at any load. The load seen
    # most often in both halves, and the floor there: what is never let go of.
    loads = {s.runs for s in early} & {s.runs for s in late}
    if half < 3 or not loads:
        return None
    load = max(loads, key=lambda n: min(sum(s.runs == n for s in early), sum(s.runs == n for s in late)))

    def pct(get: Callable[[Sample], int]) -> float:
        before = min(get(s) for s in early if s.runs == load)
        after = min(get(s) for s in late if s.runs == load)
        return round(100 * (after - before) / before, 1)

    return pct(lambda s: s.rss_kib), pct(lambda s: s.fds), round(settled[-1].at - settled[0].at)


def main_is_green(project: Path, scratch: Path, layout: Layout) -> bool:
    """The project's tests pass on main (as well as they came), checked out apart from the user's working tree."""
    folder = scratch / f"main-{project.name}"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=project, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return subprocess.run(layout.green_command.split(), cwd=folder, capture_output=True, timeout=300).returncode == 0


def in_main(project: Path, commit: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=project).returncode == 0


@dataclass
class Check:
    name: str
    held: bool
    detail: str = ""


def invariants(projects: list[Path], layouts: dict[str, Layout], data: Path, scratch: Path,
               model: ScriptedModel, cut: list[tuple[str, float]]) -> list[Check]:
    """What must hold whatever the faults did; cheap enough to run after every cycle.

    ``cut``: (session, when) of each CLI the soak killed. One killed before it
    could write its final answer to its transcript asks for it again when
    resumed: the CLI's loss, counted apart (see :func:`asked_again`).
    """
    green, outside, failed = [], [], []
    for project in projects:
        if not main_is_green(project, scratch, layouts.get(project.name, sample.SAMPLE)):
            green.append(project.name)
        with closing(Store.for_project(data, project.name)) as store:
            for task in store.list_tasks(TaskStatus.done):
                if not (task.merge_commit and in_main(project, task.merge_commit)):
                    outside.append(f"{project.name}/{task.id}")
            failed += [f"{project.name}/{t.id}: {(t.last_failure or '')[:120]}" for t in store.list_tasks(TaskStatus.failed)]
    again = [f"{r.role} {r.session_id[:8]} turn {r.turn}" for r in asked_again(model, cut, lost=False)]
    return [
        Check("main green in every project", not green, ", ".join(green)),
        Check("every done task's change is in main", not outside, ", ".join(outside[:5])),
        Check("no task failed because of a fault", not failed, "; ".join(failed[:3])),
        Check("no finished session asked again", not again, ", ".join(again[:5])),
    ]


def asked_again(model: ScriptedModel, cut: list[tuple[str, float]], lost: bool) -> list[RecordedRequest]:
    """Requests of sessions after their final answer: those whose CLI the soak killed while that
    answer was on its way or had just come (``lost``: before the CLI could write it down), or the others."""
    final: dict[str, RecordedRequest] = {}
    found = []
    for request in model.requests:
        if request.role == "unknown":  # the CLI's own side requests
            continue
        answer = final.get(request.session_id)
        if answer is not None and request.started > answer.finished:
            cut_off = any(session == request.session_id and answer.started <= when <= answer.finished + 2
                          for session, when in cut)
            if cut_off == lost:
                found.append(request)
        if request.final:
            final.setdefault(request.session_id, request)
    return found


def slots_held(api_url: str, pool: str) -> int:
    """Slots of the portfolio's agent limit the server counts as held (0 once every session ended)."""
    with urllib.request.urlopen(f"{api_url}/v2/concurrency_limits/{pool}", timeout=10) as response:
        return int(json.load(response)["active_slots"])


@dataclass
class Soak:
    """One soak's moving parts, and what happened to them."""

    root: Path
    projects: list[Path]
    server: Server
    port: int
    orch: OrchStart
    model: ScriptedModel
    layouts: dict[str, Layout]  # the real projects'; the generated ones use the sample's
    events: list[tuple[str, str]] = field(default_factory=list)  # (fault, what it hit)
    samples: list[Sample] = field(default_factory=list)
    checks: list[list[Check]] = field(default_factory=list)
    cut: list[tuple[str, float]] = field(default_factory=list)  # (session, when) of each CLI killed

    def fault(self, name: str, detail: str) -> None:
        self.events.append((name, detail))
        print(f"... fault: {name}: {detail}", file=sys.stderr, flush=True)

    # -- the faults, each leaving things as a user would find them ---------------

    def kill_cli(self) -> None:
        running = clis(self.projects) if wait_for_agents(self.projects) else []
        if running:
            session = session_of(running[0])
            os.kill(running[0], signal.SIGKILL)
            self.cut.append((session, time.monotonic()))
        self.fault("CLI killed mid-session", f"pid {running[0]}" if running else "no CLI ran in 90 s")

    def restart_server(self) -> None:
        wait_for_agents(self.projects)  # mid-cycle
        self.server.stop()
        self.server = start_server(self.root / "server", self.port)
        self.fault("Prefect server restarted", f"on port {self.port}")

    def kill_orch_start(self) -> None:
        wait_for_agents(self.projects)  # mid-cycle: its runs go on as orphans, or die with it
        self.orch.kill()
        time.sleep(3)
        self.orch.start()
        assert self.orch.process is not None
        self.fault("orch start SIGKILLed and started again", f"now pid {self.orch.process.pid}")

    def stale_index_lock(self) -> None:
        project = self._next_project()
        wait_for_agents([project])  # its cycle's merge comes within the 45 s
        lock = project / ".git" / "index.lock"
        lock.touch()
        self.fault("stale .git/index.lock", f"in {project.name} for 45 s")
        threading.Timer(45, lambda: lock.unlink(missing_ok=True)).start()

    def hanging_tests(self) -> None:
        project = self._next_project()
        wait_for_agents([project])  # a worker at work: its judge's tests come next
        marker = Path(f"{self.root / 'hang'}-{project.name}")
        marker.touch()
        self.fault("test command hangs", f"in {project.name} for {TEST_TIMEOUT_S + 15} s")
        threading.Timer(TEST_TIMEOUT_S + 15, lambda: marker.unlink(missing_ok=True)).start()

    def _next_project(self) -> Path:
        return self.projects[len(self.events) % len(self.projects)]

    def faults(self) -> list[Callable[[], None]]:
        return [self.kill_cli, self.stale_index_lock, self.restart_server, self.hanging_tests, self.kill_orch_start]

    # -- watching ------------------------------------------------------------------

    def sample(self) -> None:
        if self.orch.process is not None and self.orch.process.poll() is None:
            found = sample_process(self.orch.process.pid, len(self.orch.groups))
            if found is not None:
                self.samples.append(found)

    def cycles(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for project in self.projects:
            with closing(Store.for_project(self.root / "data", project.name)) as store:
                for found in store.list_cycles(limit=10_000):
                    counts[found.status.value] = counts.get(found.status.value, 0) + 1
        return counts

    def check(self) -> list[Check]:
        found = invariants(self.projects, self.layouts, self.root / "data", self.root / "scratch", self.model,
                           self.cut)
        self.checks.append(found)
        return found


def soak(root: Path, minutes: float, count: int, real: bool = True) -> tuple[list[str], bool]:
    """Run the soak in ``root``; the report's lines and whether every invariant held.

    ``count`` generated projects, and toolz from the real-project snapshots
    when ``real`` and this machine has them.
    """
    started, cpu_before = time.monotonic(), os.times()
    projects = [sample.make_project(root, f"p{i}") for i in range(count)]
    toolz = realrepos.make_toolz(root) if real else None
    layouts = {toolz.name: realrepos.TOOLZ} if toolz else {}
    projects += [toolz] if toolz else []
    config = make_portfolio(root, projects, layouts)
    port = free_port()
    server = start_server(root / "server", port)
    run: Soak | None = None
    try:
        with ScriptedModel(FaultyScenario(layouts=layouts)) as model:
            env = base_env(root, server.api_url) | model.env() | {"PREFECT_RUNNER_POLL_FREQUENCY": "5"}
            orch = OrchStart(config, env, root / "orch-start.log")
            run = Soak(root, projects, server, port, orch, model, layouts)
            stopped = _serve(run, deadline=started + minutes * 60)
            wait_until = time.monotonic() + 120  # runs an earlier, killed incarnation left finish on their own
            while (left := leftovers(run.orch.groups, projects)) and time.monotonic() < wait_until:
                time.sleep(2)
            final = run.check()
            # The runs Ctrl+C killed held slots: they free themselves when their leases run out.
            pool = load_portfolio(str(config)).agent_pool
            wait_until = time.monotonic() + LEASE_S + 30
            while (held := slots_held(run.server.api_url, pool)) and time.monotonic() < wait_until:
                time.sleep(5)
    finally:
        (run.server if run is not None else server).stop()  # the one the last restart left
    cpu = os.times()
    cpu_s = (cpu.user - cpu_before.user) + (cpu.system - cpu_before.system) + \
        (cpu.children_user - cpu_before.children_user) + (cpu.children_system - cpu_before.children_system)
    final += [Check("orch start stopped on Ctrl+C within 90 s", stopped),
              Check("no process left once stopped", not left, ", ".join(map(str, left[:10]))),
              Check(f"no agent slot held once stopped (a killed run's within {LEASE_S + 30} s)", held == 0,
                    f"{held} still held")]
    during = [c for checks in run.checks[:-1] for c in checks if not c.held]
    final.append(Check("every check after every cycle held", not during,
                       "; ".join(f"{c.name}: {c.detail}" for c in during[:3])))
    # For a closer look (with --keep): orch start's memory, open files and runs every 5 s.
    (root / "samples.json").write_text(json.dumps([asdict(s) for s in run.samples]))
    grew = growth(run.samples, warm_up_s=60)
    if grew is not None:
        final.append(Check("orch start's memory flat after warm-up (growth under 10%)", grew[0] < 10, f"{grew[0]}%"))
        final.append(Check("orch start's open files flat after warm-up (growth under 10%)", grew[1] < 10, f"{grew[1]}%"))
    return _report(run, started, cpu_s, grew, final), all(c.held for c in final)


def _serve(run: Soak, deadline: float) -> bool:
    """``orch start`` under faults until ``deadline`` and every fault came once; whether Ctrl+C stopped it."""
    orch, faults = run.orch, run.faults()
    orch.start()
    # Each fault in turn, again and again, every 20 to 90 s; a short soak runs on until each came once.
    every = min(90.0, max(20.0, (deadline - time.monotonic()) / (len(faults) + 1)))
    next_fault, done_cycles, turn = time.monotonic() + every, 0, 0
    try:
        while time.monotonic() < deadline or turn < len(faults):
            time.sleep(5)
            run.sample()
            finished = sum(n for status, n in run.cycles().items() if status != "running")
            if finished > done_cycles:  # after every cycle
                done_cycles = finished
                run.check()
            if time.monotonic() >= next_fault:
                faults[turn % len(faults)]()
                turn += 1
                next_fault = time.monotonic() + every
        return orch.stop()
    finally:
        if orch.process is not None and orch.process.poll() is None:
            orch.kill()


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _report(run: Soak, started: float, cpu_s: float, grew: tuple[float, float, float] | None,
            final: list[Check]) -> list[str]:
    cycles = run.cycles()
    done = timed_out = 0
    spent = []
    for project in run.projects:
        with closing(Store.for_project(run.root / "data", project.name)) as store:
            tasks, verdicts = store.list_tasks(), store.verdicts()
        done += sum(t.status is TaskStatus.done for t in tasks)
        spent += [t for t in tasks if t.attempts > 1]
        timed_out += sum(1 for v in verdicts if v.tests is not None and v.tests.timed_out)
    requests = run.model.requests
    lines = [
        f"Soak: {len(run.projects)} projects, {round((time.monotonic() - started) / 60, 1)} min wall, "
        f"{round(cpu_s / 60, 1)} CPU-min (this process and the children it waited for)",
        "Projects: " + ", ".join(p.name + (" (real, its own test suite)" if p.name in run.layouts else "")
                                 for p in run.projects),
        "Cycles by status: " + ", ".join(f"{k} {v}" for k, v in sorted(cycles.items())),
        f"Tasks done: {done}; tasks that needed more than one attempt: {len(spent)}; "
        f"branches whose tests timed out: {timed_out}",
        f"Model requests: {len(requests)}, of which failed on purpose: "
        f"{sum(r.status != 200 for r in requests)}; final answers asked again because a killed CLI had "
        f"not written them down: {len(asked_again(run.model, run.cut, lost=True))}",
        "Faults injected: " + ("; ".join(f"{name} ({detail})" for name, detail in run.events) or "none"),
        f"Data dir: {_size(run.root / 'data') // 1024} KiB; .orch folders: "
        f"{sum(_size(p / '.orch') for p in run.projects) // 1024} KiB",
    ]
    if grew is not None:
        lines.append(f"orch start over {grew[2]} s after warm-up: RSS {grew[0]:+}%, open files {grew[1]:+}%")
    if run.samples:
        lines.append(f"orch start peak RSS: {max(s.rss_kib for s in run.samples) // 1024} MiB, "
                     f"most open files: {max(s.fds for s in run.samples)}")
    lines.append("Invariants:")
    lines += [f"  {'ok  ' if c.held else 'FAIL'} {c.name}" + (f": {c.detail}" if c.detail and not c.held else "")
              for c in final]
    return lines


def main(argv: list[str]) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="How long to serve and inject faults.")
    parser.add_argument("--projects", type=int, default=2, help="How many generated projects to serve.")
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it (default: a temporary one).")
    parser.add_argument("--no-real", dest="real", action="store_false",
                        help="Serve generated projects only, not toolz from the real-project snapshots.")
    args = parser.parse_args(argv)
    if args.real and realrepos.folder() is None:
        print(f"No real-project snapshots (shared/realrepos next to this checkout, or ${realrepos.FOLDER_ENV}): "
              "serving generated projects only.", file=sys.stderr)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        lines, held = soak(args.keep.resolve(), args.minutes, args.projects, args.real)
    else:
        with tempfile.TemporaryDirectory(prefix="orch-soak-") as folder:
            lines, held = soak(Path(folder), args.minutes, args.projects, args.real)
    print("\n".join(lines))
    return 0 if held else 1
