"""A project's test runs: a tree tested once is not tested again, and only so many run at once.

A test run's result depends on the files it tests, the command, and the
environment the command runs in. So a result is kept under the git tree id
of the worktree it ran in, the command, and a digest of the environment
(every variable but the ones that change from run to run without changing
what the tests see, :data:`VOLATILE`); a later run with all three the same
takes it instead of running. That is how a cycle's base (main as the last
cycle merged and tested it), a merged result equal to a branch already
tested, and a bisection step that meets a tree again cost no test run.

What is not in the key can still change a result: a package upgraded in
place, a service the tests call, the clock. Hence results are kept for
:data:`KEEP_HOURS` hours only, a worktree with untracked files that are not
ignored (or uncommitted changes) is neither looked up nor recorded, and
``test_cache: false`` turns it all off for a project. Only final results
are kept: passes, and failures the retries confirmed (a first failure that
would be run again is not).

A project's test runs in one process (its baseline, its judges' and its
merge's) take turns beyond ``max_parallel_tests`` (default: the CPU count):
suites that outnumber the cores only slow each other down, and the agents
beside them.

With ``test_strategy`` batch (:func:`batch_first`), a cycle does not test its
branches one by one: the merge tests them merged, and a bisection over the
merges finds a branch that breaks them. ``auto`` takes it when the suite is
long next to the agents' own time.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import threading
from collections.abc import Callable
from contextlib import closing, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.adapters.store import Store
from orchestrator.domain.models import CheckResult
from orchestrator.stages.context import ProjectContext

KEEP_HOURS = 6
VOLATILE = ("PREFECT_", "PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLUMNS", "LINES", "SSH_", "DISPLAY")
"""Names (or, ending in ``_``, prefixes) of variables left out of the environment's digest:
a flow run's ids, the shell's bookkeeping, the terminal."""


def environment_digest(env: dict[str, str] | None = None) -> str:
    """A digest of the variables a test command inherits, the volatile ones apart (never the values)."""
    env = dict(os.environ if env is None else env)
    kept = sorted((k, v) for k, v in env.items()
                  if not any(k.startswith(p) if p.endswith("_") and p != "_" else k == p for p in VOLATILE))
    return hashlib.sha256(repr(kept).encode()).hexdigest()


def result_key(tree: str, command: str, env_digest: str) -> str:
    return hashlib.sha256(f"{tree}\0{command}\0{env_digest}".encode()).hexdigest()


def tested(ctx: ProjectContext, worktree: Path, run: Callable[[], CheckResult],
           take_turn: bool = True) -> CheckResult:
    """The test result for ``worktree``: one kept for its tree, else ``run()`` in its turn (kept when final).

    A kept result comes back with ``reused`` set; its output is the run's that made it.
    A run that does not ``take_turn`` (a niced one nothing waits on) starts at once.
    """
    tree = ctx.repo.clean_tree_of(worktree) if ctx.config.test_cache else None
    turn = _turn(ctx) if take_turn else nullcontext()
    if tree is None:
        with turn:
            return run()
    key = result_key(tree, ctx.config.test_command, environment_digest())
    since = (datetime.now(UTC) - timedelta(hours=KEEP_HOURS)).isoformat(timespec="seconds")
    # A connection of its own: judges run their tests in threads, and a connection stays in its thread.
    # One run of a tree at a time: a second ask waits for the first (the merge for a run ahead of it).
    with closing(Store.for_project(ctx.portfolio.data_dir, ctx.name)) as store, _tree_lock(key):
        if found := store.tested(key, since):
            return found.model_copy(update={"reused": True})
        with turn:
            result = run()
            if result.passed or (result.ran and result.runs > ctx.config.test_retries):
                store.record_tested(key, tree, result, forget_before=since)  # before the next turn
    return result


_turns: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_turns_lock = threading.Lock()
_tree_locks: dict[str, threading.Lock] = {}


def _tree_lock(key: str) -> threading.Lock:
    with _turns_lock:
        return _tree_locks.setdefault(key, threading.Lock())


def _turn(ctx: ProjectContext) -> threading.BoundedSemaphore:
    """The project's test runs at once in this process, as many as ``max_parallel_tests``."""
    limit = ctx.config.max_parallel_tests or os.cpu_count() or 1
    with _turns_lock:
        return _turns.setdefault((ctx.name, limit), threading.BoundedSemaphore(limit))


HISTORY = 10
"""Test runs and worker sessions :func:`batch_first` reads (the newest)."""
BATCH_SHARE = 0.5
"""``auto`` tests in a batch once testing every branch would add this share of a worker session."""


def batch_first(ctx: ProjectContext, branches: int) -> bool:
    """Whether this cycle's ``branches`` are tested together at the merge rather than one by one.

    ``auto`` compares what testing each branch adds to the cycle, in rounds of
    ``max_parallel_tests`` suites, with the time of a worker session (the
    medians of the newest runs the store kept): once it is half a session or
    more, one run of the merged batch is worth more than a verdict per branch.
    Until both were seen, it tests each branch. Branches that go to pull
    requests (``merge_strategy`` pr) are always tested one by one: no merge
    here tests them.
    """
    c = ctx.config
    if not c.test_command or branches == 0 or c.merge_strategy == "pr":
        return False
    if c.test_strategy != "auto":
        return c.test_strategy == "batch"
    suite, worker = ctx.store.recent_test_seconds(HISTORY), ctx.store.recent_worker_seconds(HISTORY)
    if not suite or not worker:
        return False
    rounds = math.ceil(branches / (c.max_parallel_tests or os.cpu_count() or 1))
    return rounds * statistics.median(suite) >= BATCH_SHARE * statistics.median(worker)
