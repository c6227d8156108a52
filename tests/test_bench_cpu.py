"""The benchmark's CPU by component: a real process tree's CPU lands where it was spent."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

from bench.cpu import KINDS, ProcessWatch

# A stand-in for orch run: it burns CPU itself, then starts a "CLI" (its command line names
# claude) that burns CPU in a grandchild it reaps, a test command, and a git command.
COMMAND = textwrap.dedent("""
    import subprocess, sys, time
    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
    burn(0.3)
    burner = "import time\\nend = time.process_time() + 0.4\\nwhile time.process_time() < end: pass"
    cli = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burner!r}])", "claude"])
    tests = subprocess.Popen([sys.executable, "-c", burner, "pytest"])
    cli.wait(); tests.wait()
    subprocess.run(["git", "--version"], capture_output=True)
""")


def test_each_process_cpu_goes_to_its_component() -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen([sys.executable, "-c", COMMAND])
    watch = ProcessWatch(process.pid)
    assert process.wait(timeout=60) == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    used = watch.stop(total)

    assert list(used) == list(KINDS)
    assert used["orch run process"] >= 0.25  # its own 0.3 s (the first moments may fall before a sample)
    assert used["CLIs"] >= 0.35  # the grandchild's 0.4 s, read from the CLI's reaped children
    assert used["tests and lint"] >= 0.35
    assert used["server"] == 0 and watch.servers_started == 0
    assert abs(sum(used.values()) - total) < 0.01  # what no sample saw is the rest, not lost
