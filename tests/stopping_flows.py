"""A flow for ``test_serving``'s stop test: it suspends, or it works until killed.

Loaded by Prefect's runner from this file in a process of its own, so it
imports nothing from the tests.
"""

from __future__ import annotations

import atexit
import time

import anyio
from prefect import flow
from prefect.flow_runs import asuspend_flow_run


@flow(name="stopping")
async def stopping(suspend: bool) -> None:
    if suspend:
        # The process lingers once suspended, as a cycle's does while it ends, so a
        # stop that looks at the run then finds its process still there.
        atexit.register(time.sleep, 10)
        await asuspend_flow_run(timeout=600)
    await anyio.sleep(600)
