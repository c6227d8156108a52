"""Spend caps per cycle and per UTC day, counted from recorded cost.

``max_budget_per_task`` (and the plan and review caps) bound one session;
``max_budget_per_cycle`` and ``max_budget_per_day`` bound a project's
sessions together. A session may start only if what is recorded, plus what
the sessions still running may spend (their own caps), plus its own cap,
stays within both. So the caps hold even while sessions run in parallel (a
session can overshoot its own cap by one response, as the CLI checks after
each). Running sessions are never stopped; a session that may not start
raises :class:`BudgetReached`, and its task waits without spending an attempt.

Only one cycle of a project runs at a time (see :mod:`.lock`), in one
process, so the sessions in flight are known here: a ledger per project
keeps each one's cap while it runs and its cost once it ends, until the
flow records that cost in the store.
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

_lock = threading.RLock()
# Per store file: session id -> (cycle id, USD it may spend or did spend).
_ledgers: dict[Path, dict[str, tuple[str, float]]] = {}


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now``'s day: where the per-day cap starts counting."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class CycleBudget:
    """The caps as one cycle of one project sees them."""

    config: ProjectConfig
    store: Store
    cycle_id: str

    def _in_flight(self) -> dict[str, tuple[str, float]]:
        """Sessions of this project that ran here and are not recorded yet."""
        with _lock:
            ledger = _ledgers.setdefault(self.store.path, {})
            recorded = self.store.recorded_sessions(ledger)
            for session_id in recorded:
                ledger.pop(session_id, None)
            return dict(ledger)

    def stop(self, cap_usd: float = 0.0) -> BudgetReached | None:
        """Why a session that may spend ``cap_usd`` must not start now, or None."""
        c = self.config
        if c.max_budget_per_cycle is None and c.max_budget_per_day is None:
            return None
        flight = self._in_flight()
        if c.max_budget_per_cycle is not None:
            spent = self.store.cycle_cost(self.cycle_id) + sum(
                amount for cycle_id, amount in flight.values() if cycle_id == self.cycle_id)
            if spent + cap_usd > c.max_budget_per_cycle + 1e-9:
                return BudgetReached(
                    f"per-cycle cap ${c.max_budget_per_cycle:.2f} reached (spent or committed "
                    f"${spent:.4f}); it resets with the next cycle", cap="max_budget_per_cycle")
        if c.max_budget_per_day is not None:
            start = day_start()
            spent = self.store.cost_since(start.isoformat(timespec="seconds")) + sum(
                amount for _, amount in flight.values())
            if spent + cap_usd > c.max_budget_per_day + 1e-9:
                resets = (start + timedelta(days=1)).isoformat(timespec="seconds")
                return BudgetReached(
                    f"per-day cap ${c.max_budget_per_day:.2f} reached (spent or committed ${spent:.4f} "
                    f"today); it resets at {resets[:16].replace('T', ' ')} UTC",
                    cap="max_budget_per_day", resets_at=resets)
        return None

    @contextmanager
    def session(self, session_id: str, cap_usd: float) -> Iterator[Callable[[float], None]]:
        """Hold ``cap_usd`` for a session while it runs; yields a setter for its final cost.

        Raises BudgetReached (and records it for ``orch status``) when it may not start.
        """
        with _lock:  # check and reserve as one step: parallel sessions cannot both pass
            reached = self.stop(cap_usd)
            if reached is None:
                _ledgers.setdefault(self.store.path, {})[session_id] = (self.cycle_id, cap_usd)
        if reached is not None:
            self.store.set_budget_stop(str(reached), reached.resets_at or None)
            raise reached
        final = [cap_usd]
        try:
            yield lambda cost: final.__setitem__(0, cost)
        finally:
            with _lock:
                _ledgers.setdefault(self.store.path, {})[session_id] = (self.cycle_id, final[0])
