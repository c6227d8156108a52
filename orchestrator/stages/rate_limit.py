"""Rate and usage limits park the project until they reset, instead of failing its tasks.

When the model API refuses with a limit that resets minutes or hours away, the
CLI says so (it announces the wait before it retries). The agent runtime then
cuts the session, which resumes later under its own id, and calls
:meth:`ProjectPark.park`. Until the reset no session of the project starts:
the runtime asks :meth:`ProjectPark.until` first, and a cycle that starts
meanwhile ends at once (see :func:`holds`). The tasks involved go back
pending with their attempts unspent, as for any API fault.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from orchestrator.adapters.store import Store
from orchestrator.domain.state import ProjectState


def until(state: ProjectState, now: datetime) -> datetime | None:
    """When the project's park ends, while it holds; None otherwise."""
    if not state.rate_limited_until:
        return None
    ends = datetime.fromisoformat(state.rate_limited_until)
    return ends if ends > now else None


def describe(ends: datetime) -> str:
    """'rate-limited until 14:05 (UTC)', with the date when it is not today."""
    now = datetime.now(UTC)
    when = ends.strftime("%H:%M") if ends.date() == now.date() else ends.strftime("%Y-%m-%d %H:%M")
    return f"rate-limited until {when} (UTC)"


def holds(state: ProjectState, now: datetime) -> str:
    """'rate-limited until 14:05 (UTC): why', while the park holds ('' otherwise)."""
    ends = until(state, now)
    if ends is None:
        return ""
    return f"{describe(ends)}: {state.rate_limit_reason or 'the model API said so'}"


def newly_parked(before: ProjectState, after: ProjectState) -> str:
    """The park a cycle should announce ('' for none): once per limit, not by every run it stops."""
    if not after.rate_limited_until or after.rate_limited_until == before.rate_limited_until:
        return ""
    ends = datetime.fromisoformat(after.rate_limited_until)
    return f"{describe(ends)}: {after.rate_limit_reason}"


class ProjectPark:
    """The project's park as its agent sessions see it (``AgentSpec.park``)."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def until(self) -> float | None:
        """When the park ends (a Unix time), while it holds."""
        ends = until(self.store.state(), self.clock())
        return ends.timestamp() if ends else None

    def park(self, ends_at: float, reason: str) -> None:
        """Park the project until ``ends_at`` (a Unix time); a later park already set stays."""
        ends = datetime.fromtimestamp(ends_at, UTC).replace(microsecond=0)
        current = until(self.store.state(), self.clock())
        if current is None or ends > current:
            self.store.set_rate_limit(ends.isoformat(), reason)
