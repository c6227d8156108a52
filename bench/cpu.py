"""Where a benchmarked command's CPU goes: its process tree, read from /proc every 50 ms.

Each process the command starts is measured with everything under it: its
own CPU, its live descendants', and the CPU its ended descendants left in
its children's times once it reaped them (the leash adopts what a CLI leaves
behind, so nothing under a CLI escapes it). The highest sum seen is kept, so
a process that ends between two samples loses only its last moments. Git
commands mostly start and end between samples: what no sample saw is the
command's total CPU (from its rusage) less all the rest, reported as
"short-lived" and mostly git. The command's own process is Prefect's client
and our code; a server it starts is "server", and so is the running server
whose process ``server_pid`` names.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

INTERVAL_S = 0.05
TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("orch run process", "CLIs", "tests and lint", "git", "server", "short-lived")
"""The components, in the order they are printed; the last is found by difference."""


def stat_of(pid: int) -> tuple[int, float, float] | None:
    """Parent, own CPU seconds and reaped children's CPU seconds of ``pid`` (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS, (int(fields[13]) + int(fields[14])) / TICKS


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _kind(pid: int, forked_from: bytes) -> str | None:
    """What a direct child is (None while unknown: gone, or forked and not yet running its program)."""
    raw = _cmdline(pid)
    if not raw or raw == forked_from:
        return None
    argv = raw.split(b"\0")
    line = b" ".join(argv)
    if b"uvicorn" in line or b"prefect server start" in line:
        return "server"
    if b"leash" in line or b"claude" in line:
        return "CLIs"
    if Path(argv[0].decode(errors="replace")).name == "git":
        return "git"
    return "tests and lint"  # the test and lint commands, niced or not


class ProcessWatch:
    """CPU by component of the process ``root`` and its tree, and the servers it started."""

    def __init__(self, root: int, server_pid: int | None = None) -> None:
        self.root, self.server_pid = root, server_pid
        self.kinds: dict[int, str] = {}  # each direct child of root, by what it is
        self.most: dict[int, float] = {}  # the highest CPU sum seen under each direct child
        self.own = 0.0  # root's own CPU
        self.server_before = self._server_cpu(_all_stats())
        self.server_now = self.server_before
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    @property
    def servers_started(self) -> int:
        return sum(kind == "server" for kind in self.kinds.values())

    def _server_cpu(self, every: dict[int, tuple[int, float, float]]) -> float:
        if self.server_pid is None:
            return 0.0
        return sum(own + reaped for _, own, reaped in _tree(every, self.server_pid).values())

    def _watch(self) -> None:
        while not self.done.wait(INTERVAL_S):
            self._sample()

    def _sample(self) -> None:
        every = _all_stats()
        stats = _tree(every, self.root)
        if self.root in stats:
            self.own = max(self.own, stats[self.root][1])
        sums: dict[int, float] = {}
        for pid, (_, own, reaped) in stats.items():
            if pid == self.root:
                continue
            top = pid  # the direct child of root it is under (_tree holds every parent up to root)
            while stats[top][0] != self.root:
                top = stats[top][0]
            sums[top] = sums.get(top, 0.0) + own + reaped
        if new := [pid for pid in sums if pid not in self.kinds]:
            root_cmdline = _cmdline(self.root)  # what a child forked and not yet running its program shows
            for pid in new:
                if (kind := _kind(pid, root_cmdline)) is not None:
                    self.kinds[pid] = kind
        for pid, total in sums.items():
            self.most[pid] = max(self.most.get(pid, 0.0), total)
        if self.server_pid is not None:
            self.server_now = max(self.server_now, self._server_cpu(every))

    def stop(self, total_cpu_s: float) -> dict[str, float]:
        """CPU seconds by component, given the command's total (itself and all it waited for)."""
        self.done.set()
        self.thread.join()
        used = dict.fromkeys(KINDS, 0.0)
        used["orch run process"] = self.own
        for pid, most in self.most.items():
            if pid in self.kinds:  # one never seen running its program is left to "short-lived"
                used[self.kinds[pid]] += most
        seen_server = used["server"]  # a temporary server is inside the total, a running one is not
        used["short-lived"] = max(0.0, total_cpu_s - sum(used.values()))
        used["server"] = seen_server + self.server_now - self.server_before
        return used


def _all_stats() -> dict[int, tuple[int, float, float]]:
    """Every live process: parent, own CPU, reaped children's CPU."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := stat_of(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


def _tree(stats: dict[int, tuple[int, float, float]], root: int) -> dict[int, tuple[int, float, float]]:
    """``root`` and every process under it, of ``stats``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found[pid] = stats[pid]
            todo += children.get(pid, [])
    return found
