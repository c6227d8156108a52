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
signal stops at once. A signal that comes while the runner is still starting
(its deployments registered, their schedules already active) is kept, and the
runner stops as soon as it has started: raised there, a KeyboardInterrupt can
be swallowed by whatever code it lands in, and serving would go on.

A run whose process dies is reported Crashed by Prefect's runner whatever its
state. A cycle that has just suspended for approval ends its process by
itself; killed in that moment, it would lose its suspension and the approval
would have no run to resume. Such a run is left Suspended.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from typing import Any

import anyio
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner

from orchestrator.adapters import internals

logger = logging.getLogger(__name__)


class StoppingRunner(Runner):
    """Prefect's runner, whose stop ends its runs' processes without cancelling the runs."""

    stop_asked = False

    async def __aenter__(self) -> StoppingRunner:
        await super().__aenter__()
        _spare_suspended_runs(self)
        if self.stop_asked:  # a signal came while it was starting
            self.execute_in_background(self._stop)
        return self

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        if self.stop_asked:
            raise KeyboardInterrupt  # asked a second time: at once
        self.stop_asked = True
        # A signal handler runs between two bytecodes of the loop's thread: the stop
        # itself runs in the loop, as one of its tasks. Not started yet: __aenter__ stops it.
        if self.started:
            self.execute_in_background(self._stop)

    async def _stop(self) -> None:
        if self.started:  # astop clears it before its first await: a second call does nothing
            await self.astop()

    async def cancel_all(self) -> None:
        # The first step of Prefect's stop; its own proposes Cancelled for every run.
        # Killed at once: a SIGTERM lets a run's agents go on asking for seconds, and
        # a cycle is built to resume after a kill. A kill that fails must not stop the
        # stop: its future is read by nobody, and serving would go on.
        processes = internals.prefect_runner_processes(self)
        for flow_run_id in processes.flow_run_ids():
            try:
                await processes.kill(flow_run_id, force=True)
            except Exception:
                logger.exception("Could not kill the process of flow run %s", flow_run_id)


STATE_READ_S = 10.0
"""How long a crash report waits to learn whether the run had suspended; past it, the run is reported Crashed."""


def _spare_suspended_runs(runner: Runner) -> None:
    """Prefect's crash report, but for a run that suspended itself: it stays Suspended."""
    reports, client = internals.prefect_runner_crash_reports(runner)
    report_crashed = reports.propose_crashed

    async def unless_suspended(flow_run: FlowRun, message: str) -> State[Any] | None:
        current = None
        with anyio.move_on_after(STATE_READ_S):
            try:
                current = (await client.read_flow_run(flow_run.id)).state
            except Exception as exc:  # not known to have suspended: reported as Prefect would
                logger.warning("Could not read the state of flow run %s before reporting it crashed: %s",
                               flow_run.id, exc)
        if current is not None and current.is_paused() and current.state_details.pause_reschedule:
            logger.info("Flow run %s suspended before its process ended; it stays %s", flow_run.id, current.name)
            return None
        return await report_crashed(flow_run, message)

    reports.propose_crashed = unless_suspended


async def serve(deployments: Sequence[RunnerDeployment], ctrl_c: bool) -> None:
    """Serve ``deployments`` until SIGTERM (or Ctrl+C, with ``ctrl_c``) stops it, schedules paused."""
    runner = StoppingRunner(pause_on_shutdown=True)
    # Set before the deployments are added: adding them makes their schedules active.
    # The runner sets its SIGTERM handler itself when it starts; both are put back after.
    stops = [signal.SIGTERM, signal.SIGINT] if ctrl_c else [signal.SIGTERM]
    previous = {signum: signal.signal(signum, runner.handle_sigterm) for signum in stops}
    try:
        for deployment in deployments:
            await runner.aadd_deployment(deployment)
        await runner.start()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
