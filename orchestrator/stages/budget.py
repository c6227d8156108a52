"""Spend caps per cycle and per UTC day, counted from recorded cost.

``max_budget_per_task`` (and the plan and review caps) bound one session;
``max_budget_per_cycle`` and ``max_budget_per_day`` bound a project's
sessions together. A session may start only if what is recorded, plus what
the sessions still running may spend (their own caps), plus its own cap,
stays within both. So the caps hold even while sessions run in parallel (a
session can overshoot its own cap by one response, as the CLI checks after
each). Running sessions are never stopped; a session that may not start
raises :class:`BudgetReached`, and its task waits without spending an attempt.

Only one cycle of a project runs at a time (see :mod:`orchestrator.adapters.lock`), in one
process, so the sessions in flight are known to that process: a
:class:`SpendLedger` keeps each one's cap while it runs and its cost once it
ends, until the flow records that cost in the store. Each step reopens its
project, so the ledger comes with the project context (see
:class:`~orchestrator.stages.context.Services`), one per process unless a
test passes its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.adapters.store import Store
from orchestrator.domain.config import ProjectConfig
from orchestrator.domain.errors import BudgetReached
from orchestrator.domain.state import ProjectState


def utc_now() -> datetime:
    return datetime.now(UTC)


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now``'s day: where the per-day cap starts counting."""
    now = now or utc_now()
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class SpendLedger:
    """Sessions that ran in this process and whose cost is not in the store yet, per store file."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # Per store file: session id -> (cycle id, USD it may spend or did spend).
        self._sessions: dict[Path, dict[str, tuple[str, float]]] = {}

    def in_flight(self, store: Store) -> dict[str, tuple[str, float]]:
        """The project's sessions not recorded yet (those recorded meanwhile are dropped)."""
        with self.lock:
            sessions = self._sessions.setdefault(store.path, {})
            for session_id in store.recorded_sessions(sessions):
                sessions.pop(session_id, None)
            return dict(sessions)

    def hold(self, store: Store, session_id: str, cycle_id: str, usd: float) -> None:
        """Count ``usd`` for the session: its cap while it runs, its cost once it ends."""
        with self.lock:
            self._sessions.setdefault(store.path, {})[session_id] = (cycle_id, usd)


PROCESS_LEDGER = SpendLedger()
"""The ledger of this process: every context opened here shares it unless given another."""


@dataclass(frozen=True)
class CycleBudget:
    """The caps as one cycle of one project sees them."""

    config: ProjectConfig
    store: Store
    cycle_id: str
    ledger: SpendLedger = PROCESS_LEDGER
    now: Callable[[], datetime] = utc_now

    def stop(self, cap_usd: float = 0.0) -> BudgetReached | None:
        """Why a session that may spend ``cap_usd`` must not start now, or None."""
        c = self.config
        if c.max_budget_per_cycle is None and c.max_budget_per_day is None:
            return None
        flight = self.ledger.in_flight(self.store)
        if c.max_budget_per_cycle is not None:
            spent = self.store.cycle_cost(self.cycle_id) + sum(
                amount for cycle_id, amount in flight.values() if cycle_id == self.cycle_id)
            if spent + cap_usd > c.max_budget_per_cycle + 1e-9:
                return BudgetReached(
                    f"per-cycle cap ${c.max_budget_per_cycle:.2f} reached (spent or committed "
                    f"${spent:.4f}); it resets with the next cycle", cap="max_budget_per_cycle")
        if c.max_budget_per_day is not None:
            start = day_start(self.now())
            spent = self.store.cost_since(start.isoformat(timespec="seconds")) + sum(
                amount for _, amount in flight.values())
            if spent + cap_usd > c.max_budget_per_day + 1e-9:
                resets = (start + timedelta(days=1)).isoformat(timespec="seconds")
                return BudgetReached(
                    f"per-day cap ${c.max_budget_per_day:.2f} reached (spent or committed ${spent:.4f} "
                    f"today); it resets at {resets[:16].replace('T', ' ')} UTC",
                    cap="max_budget_per_day", resets_at=resets)
        return None

    def open_cycle(self) -> BudgetReached | None:
        """A new cycle starts: the per-cycle stop is cleared, then why not even its cheapest session fits.

        When none fits, nothing is claimed or planned, and the stop is recorded for ``orch status``.
        """
        self.store.set_budget_stop("", None)
        c = self.config
        reached = self.stop(min(c.max_budget_per_plan, c.max_budget_per_task, c.max_budget_per_review))
        if reached is not None:
            self._record(reached)
        return reached

    def _record(self, reached: BudgetReached) -> None:
        """Keep why sessions may not start, for ``orch status`` and the announcement."""
        self.store.set_budget_stop(str(reached), reached.resets_at or None)

    @contextmanager
    def session(self, session_id: str, cap_usd: float) -> Iterator[Callable[[float], None]]:
        """Hold ``cap_usd`` for a session while it runs; yields a setter for its final cost.

        Raises BudgetReached (and records it for ``orch status``) when it may not start.
        """
        with self.ledger.lock:  # check and reserve as one step: parallel sessions cannot both pass
            reached = self.stop(cap_usd)
            if reached is None:
                self.ledger.hold(self.store, session_id, self.cycle_id, cap_usd)
        if reached is not None:
            self._record(reached)
            raise reached
        final = [cap_usd]
        try:
            yield lambda cost: final.__setitem__(0, cost)
        finally:
            self.ledger.hold(self.store, session_id, self.cycle_id, final[0])


def newly_reached(before: ProjectState, after: ProjectState) -> str:
    """The budget stop a cycle should announce ('' for none): a day's cap once, not by every
    cycle it stops until midnight."""
    known = bool(before.budget_stop) and after.budget_resets_at and before.budget_resets_at == after.budget_resets_at
    return after.budget_stop if after.budget_stop and not known else ""
