"""Serving deployments in this process, and stopping the way ``orch start`` promises.

Prefect's runner stops on SIGTERM by cancelling every flow run it started:
each is marked Cancelled, a cycle suspended at its approval gate too, so
nothing resumes it. Ctrl+C left to Python raises KeyboardInterrupt wherever
the event loop happens to be, which can leave the runner's shutdown waiting
for something that will never come (serving then ignores Ctrl+C).

Here SIGTERM, and Ctrl+C when asked, make the loop stop serving: no new run
starts, the flow runs in flight have their processes killed (Prefect records
them as crashed; their agents stop with them and their cycles resume on the
next run), Prefect pauses the served schedules, and serving returns. A second
signal stops at once.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner

from orchestrator.adapters import internals


class StoppingRunner(Runner):
    """Prefect's runner, whose stop ends its runs' processes without cancelling the runs."""

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        if not self.started or self.stopping:
            raise KeyboardInterrupt  # not serving yet, or asked a second time: at once
        self.stopping = True
        # A signal handler runs between two bytecodes of the loop's thread: the stop
        # itself runs in the loop, as one of its tasks.
        self.execute_in_background(self.astop)

    async def cancel_all(self) -> None:
        # The first step of Prefect's stop; its own proposes Cancelled for every run.
        # Killed at once: a SIGTERM lets a run's agents go on asking for seconds, and
        # a cycle is built to resume after a kill.
        processes = internals.prefect_runner_processes(self)
        for flow_run_id in processes.flow_run_ids():
            await processes.kill(flow_run_id, force=True)


async def serve(deployments: Sequence[RunnerDeployment], ctrl_c: bool) -> None:
    """Serve ``deployments`` until SIGTERM (or Ctrl+C, with ``ctrl_c``) stops it, schedules paused."""
    runner = StoppingRunner(pause_on_shutdown=True)
    for deployment in deployments:
        await runner.aadd_deployment(deployment)
    # The runner sets its SIGTERM handler itself when it starts; both are put back after.
    stops = [signal.SIGTERM, signal.SIGINT] if ctrl_c else [signal.SIGTERM]
    previous = {signum: signal.signal(signum, runner.handle_sigterm) for signum in stops}
    try:
        await runner.start()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
