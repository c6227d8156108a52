"""Serving deployments in this process, and stopping the way ``orch start`` promises.

Prefect's runner stops on SIGTERM by cancelling every flow run it started:
each is marked Cancelled, a cycle suspended at its approval gate too, so
nothing resumes it. Ctrl+C left to Python raises KeyboardInterrupt wherever
the event loop happens to be, which can leave the runner's shutdown waiting
for something that will never come (serving then ignores Ctrl+C).

Here SIGTERM, and Ctrl+C when asked, make the loop stop serving: no new run
starts, the flow runs in flight have their processes killed (Prefect records
them as crashed; their agents stop with them and their cycles resume on the
next run), but for a run that has just suspended for approval and is ending
by itself; Prefect pauses the served schedules, and serving returns. A
second signal stops at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import anyio
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner

from orchestrator.adapters import internals

logger = logging.getLogger(__name__)


class StoppingRunner(Runner):
    """Prefect's runner, whose stop ends its runs' processes without cancelling the runs."""

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        if not self.started or self.stopping:
            raise KeyboardInterrupt  # not serving yet, or asked a second time: at once
        self.stopping = True
        # A signal handler runs between two bytecodes of the loop's thread: the stop
        # itself runs in the loop, as one of its tasks.
        self.execute_in_background(self._stop)

    async def _stop(self) -> None:
        # Run in the background, an error would be kept in a future nobody reads, and
        # serving would go on: whatever fails, the loops are cancelled and serving ends.
        try:
            await self.astop()
        except Exception:
            logger.exception("Stopping the runner failed; killing its runs and stopping its loops anyway")
            with contextlib.suppress(Exception):
                processes = internals.prefect_runner_processes(self)
                for flow_run_id in list(processes.flow_run_ids()):
                    await processes.kill(flow_run_id, force=True)
            self._loops_task_group.cancel_scope.cancel()

    async def cancel_all(self) -> None:
        # The first step of Prefect's stop; its own proposes Cancelled for every run.
        # Killed at once: a SIGTERM lets a run's agents go on asking for seconds, and
        # a cycle is built to resume after a kill.
        processes = internals.prefect_runner_processes(self)
        running = list(processes.flow_run_ids())
        waiting = await _suspended(running)
        for flow_run_id in running:
            if flow_run_id not in waiting:
                await processes.kill(flow_run_id, force=True)


SUSPENDED_READ_S = 5.0
"""How long the stop waits to learn which runs have just suspended; past it, every run is killed."""


async def _suspended(flow_run_ids: list[UUID]) -> set[UUID]:
    """The runs that have just suspended (a cycle waiting for approval) and whose process is ending.

    Killed then, the runner would report such a run Crashed over its Suspended
    state, and the approval would have no run left to resume; its process ends
    by itself within moments. One request, bounded: a server that is slow or
    down must not hold up the stop.
    """
    if not flow_run_ids:
        return set()
    with anyio.move_on_after(SUSPENDED_READ_S):
        try:
            async with get_client() as client:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        except Exception as exc:  # not known to be waiting: stopped like any other run
            logger.warning("Could not read the runs' states before stopping them: %s", exc)
            return set()
        return {run.id for run in runs if run.state is not None and run.state.is_paused()}
    return set()


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
