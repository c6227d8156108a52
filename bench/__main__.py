"""``python -m bench``: where a cycle's time goes, against the targets of BENCHMARKS.md.

Everything is real except the model: ``orch`` commands run as subprocesses
against generated projects, a real Prefect server (or Prefect's temporary
one) and the real Claude Code CLI, answered by the scripted model with a
fixed latency per response. ``--quick`` runs a small version of each
scenario, to check that the benchmark works; its figures mean little.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deployments.server import DEFAULT_API_URL, Server, free_port, healthy, start_server

from . import project as sample
from . import realrepos
from .reads import ReadFigures, measure_reads
from .realrepos import RealProject
from .report import SAMPLE_NAME, Cycle, render, render_cycles
from .resume import measure_resume
from .runs import base_env, cycle_figures


def _cycle(root: Path, name: str, tasks: int, latency_s: float, server: Server | None,
           real: RealProject | None = None, broken: frozenset[int] = frozenset(), judge_reads: int = 1,
           suite_tests: int = sample.SUITE_TESTS, **settings: object) -> Cycle:
    """One cycle of ``orch run`` against ``server`` (None: Prefect's temporary one), on a generated
    project or on a copy of ``real``."""
    folder = root / name
    folder.mkdir()
    path = real.make(folder) if real else sample.make_project(folder, suite_tests=suite_tests)
    layout = real.layout if real else sample.WITH_SUITE
    config = sample.write_portfolio(folder, path, tasks, layout.test_command, **settings)
    env = base_env(root, server.api_url if server else None)
    figures = cycle_figures(sample.scenario(tasks, latency_s, layout, broken, judge_reads), config, path.name, env,
                            folder, server.process.pid if server and server.process else None)
    return Cycle(tasks=tasks, latency_s=latency_s, server="running server" if server else "temporary server",
                 figures=figures, project=real.name if real else SAMPLE_NAME)


def run(root: Path, server: Server, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    api_url = server.api_url
    cycles: list[Cycle] = []
    modes: list[Server | None] = [server]
    suite = 40 if quick else sample.SUITE_TESTS
    if quick:
        plan = [(2, 0.0)]
    else:
        plan = [(3, 1.0), (8, 1.0), (3, 0.0), (8, 0.0)]
        if healthy(DEFAULT_API_URL):
            progress(f"A Prefect server answers at {DEFAULT_API_URL}: orch run would use it, so the "
                     "temporary-server scenarios are skipped.")
        else:
            modes.append(None)
    for mode in modes:
        label = "running" if mode else "temporary"
        if not quick:  # the first cycle of a process tree pays for cold caches and a new database
            progress(f"warm-up cycle ({label} server)")
            _cycle(root, f"warm-up-{label}", 1, 0.0, mode, suite_tests=suite)
        for tasks, latency in plan:
            progress(f"cycle: {tasks} tasks, {latency:g} s per response, {label} server")
            cycles.append(_cycle(root, f"cycle-{tasks}-{latency:g}-{label}", tasks, latency, mode,
                                 suite_tests=suite))
    toolz = realrepos.toolz()  # after the warm-up: the sample's figures stay as they were
    if toolz is None:
        progress(f"The real-project snapshots are not here ({realrepos.FOLDER_ENV} names them): "
                 "no cycle on a real project.")
    elif not quick:
        progress(f"cycle: 8 tasks on {toolz.name}, 1 s per response, running server")
        cycles.append(_cycle(root, "cycle-toolz", 8, 1.0, server, toolz))
    progress("resume after a kill")
    (root / "resume").mkdir()
    resume = measure_resume(root / "resume", base_env(root, api_url), latency_s=0.3 if quick else 1.0)
    rows = 2_000 if quick else 100_000
    progress(f"orch status and orch tasks with {rows:,} tasks")
    (root / "reads").mkdir()
    reads: ReadFigures = measure_reads(root / "reads", base_env(root, None), rows, repeats=1 if quick else 5)
    return {"cycles": cycles, "resume": resume, "reads": reads}


def _field(parser: argparse.ArgumentParser, pair: str) -> tuple[str, object]:
    name, sep, value = pair.partition("=")
    if not sep or not name:
        parser.error(f"--set {pair}: expected FIELD=VALUE")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:
        from .scale import main as scale

        return scale(argv[1:])
    if argv[:1] == ["slots"]:
        from .slots import main as slots

        return slots(argv[1:])
    if argv[:1] == ["soak"]:
        from .soak import main as soak

        return soak(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A small run of each scenario (seconds, not minutes).")
    parser.add_argument("--api-url", help="Use this Prefect server for the running-server scenarios instead of starting one.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument("--repo", type=Path, help="Only cycles on this git repository (a clone of its main; "
                        "the original is not touched), with --test-cmd as its test command.")
    parser.add_argument("--test-cmd", help="The test command of --repo, run at its top.")
    parser.add_argument("--test-dir", default="", help="With --repo: the folder (from its top) where the "
                        "test command finds the steps' tests (default: the top).")
    parser.add_argument("--tasks", default="3,8", help="With --repo: the cycles' task counts, comma-separated.")
    parser.add_argument("--test-strategy", choices=["auto", "batch", "per_branch"],
                        help="With --repo: the project's test_strategy (default: its own default).")
    parser.add_argument("--latency", type=float, default=1.0, metavar="S",
                        help="With --repo: seconds per model response (default 1).")
    parser.add_argument("--judge-reads", type=int, default=1, metavar="N",
                        help="With --repo: responses the reviewer spends reading before it answers (default 1).")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="With --repo: another project field (VALUE as JSON, else a string), such as "
                             "review_while_testing=false; may be given more than once.")
    parser.add_argument("--broken", type=int, action="append", default=[], metavar="I",
                        help="With --repo: the worker of step I (from 0) leaves a module its own test fails "
                             "and says it is done all the same; may be given more than once.")
    args = parser.parse_args(argv)
    if bool(args.repo) != bool(args.test_cmd):
        parser.error("--repo and --test-cmd go together")
    chosen = {"test_strategy": args.test_strategy} if args.test_strategy else {}
    chosen |= dict(_field(parser, pair) for pair in args.set)  # a bad one fails before a server starts

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="orch-bench-") as folder:
        root = Path(folder)
        if args.api_url:
            server = Server(args.api_url)
        else:
            progress("starting a Prefect server")
            server = start_server(root / "server", free_port())
        try:
            if args.repo:
                repo = realrepos.from_repo(args.repo, args.test_cmd, args.test_dir)
                cycles = []
                for tasks in (int(n) for n in args.tasks.split(",")):
                    progress(f"cycle: {tasks} tasks on {repo.name}, {args.latency:g} s per response, running server")
                    cycles.append(_cycle(root, f"cycle-{tasks}", tasks, args.latency, server, repo,
                                         frozenset(args.broken), args.judge_reads, **chosen))
                print(render_cycles(cycles))
                return 0
            results = run(root, server, args.quick, progress)
        finally:
            server.stop()
    print(render(results["cycles"], results["resume"], results["reads"]))
    if args.json:
        args.json.write_text(json.dumps({k: asdict(v) if not isinstance(v, list) else [asdict(c) for c in v]
                                         for k, v in results.items()}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
