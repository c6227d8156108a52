"""The portfolio's agent cap as one project sees it.

``max_total_workers``, when the portfolio sets it, bounds the agent sessions
of every project together (a Prefect global concurrency limit, see
``tasks/slots.py``). When it binds, a session waits for a slot; the wait is
recorded on the cycle so that ``orch run``'s live line and ``orch status``
can say the cap is what holds the work back, rather than leaving a user to
wonder why fewer workers run than ``max_workers`` asks for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.adapters.store import Store
from orchestrator.domain.config import PortfolioConfig, ProjectConfig
from orchestrator.domain.models import CycleStatus
from orchestrator.domain.state import Cycle


@dataclass(frozen=True)
class CycleSlotWatch:
    """Records a cycle's sessions while they wait for a slot (an :class:`agent.SlotWatch`)."""

    store: Store
    cycle_id: str

    @contextmanager
    def waiting(self) -> Iterator[None]:
        self.store.slot_wait_began(self.cycle_id)
        started = time.monotonic()
        try:
            yield
        finally:
            self.store.slot_wait_ended(self.cycle_id, time.monotonic() - started)


def cap_note(portfolio: PortfolioConfig, project: ProjectConfig, cycle: Cycle | None) -> str:
    """What the portfolio's cap does to this project: '' when there is none or it never bound."""
    cap = portfolio.max_total_workers
    if cap is None:
        return ""
    name = f"max_total_workers {cap}"
    if cycle and cycle.status is CycleStatus.running and cycle.slot_waiting:
        return f"{cycle.slot_waiting} session(s) waiting for an agent slot ({name} binds)"
    if cycle and cycle.slot_waits:
        return (f"{name} held {cycle.slot_waits} session(s) back for "
                f"{cycle.slot_wait_s:.0f} s in all in cycle {cycle.id}")
    if project.max_workers > cap:
        return f"{name} allows fewer agents than max_workers {project.max_workers}"
    return ""
