"""The suite's check that nothing blocks the event loop fails when something does, and says where."""

from __future__ import annotations

import asyncio
import time

import pytest
from cycles import SLOW_CALLBACK_S, run_watched


async def sleeps_on_the_loop() -> str:
    time.sleep(SLOW_CALLBACK_S + 0.3)  # what a blocking git call or subprocess does to every other project
    return "done"


async def waits_without_blocking() -> str:
    await asyncio.sleep(SLOW_CALLBACK_S + 0.3)
    await asyncio.to_thread(time.sleep, SLOW_CALLBACK_S + 0.3)
    return "done"


def test_a_blocked_loop_fails_with_the_stack_that_blocked_it() -> None:
    with pytest.raises(AssertionError, match="the event loop was blocked") as failure:
        run_watched(sleeps_on_the_loop())
    assert "in sleeps_on_the_loop" in str(failure.value)


def test_waiting_on_the_loop_or_in_a_thread_is_fine() -> None:
    assert run_watched(waits_without_blocking()) == "done"
