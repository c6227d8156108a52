"""The orchestrator's exception types.

One base class, a few subclasses by where the failure enters. Expected
outcomes (a rejected branch, a failed check) are values, not exceptions.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class: every error the orchestrator raises on purpose."""


class ConfigError(OrchestratorError):
    """The portfolio file or a command-line argument is wrong; never retried."""


class StoreError(OrchestratorError):
    """The project's SQLite state cannot be read or written as asked."""


class GitError(OrchestratorError):
    """A git operation failed; the message names the repository and command."""


class AgentError(OrchestratorError):
    """A Claude Code agent run failed.

    ``subtype`` is the CLI's result subtype when there was one
    (``error_max_turns``, ``error_max_budget_usd``, ...) or one of our own
    (``timeout``, ``no_structured_output``, ``invalid_output``, ``process``).
    ``transient`` says whether the same run may succeed if tried again
    (API overload, rate limit, refused connection, timeout).
    """

    def __init__(
        self,
        message: str,
        *,
        subtype: str,
        transient: bool = False,
        cost_usd: float = 0.0,
        session_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.subtype = subtype
        self.transient = transient
        self.cost_usd = cost_usd
        self.session_id = session_id

    def __reduce__(self):  # keep the fields when pickled into Prefect results
        return (
            _rebuild_agent_error,
            (str(self), self.subtype, self.transient, self.cost_usd, self.session_id),
        )


def _rebuild_agent_error(
    message: str, subtype: str, transient: bool, cost_usd: float, session_id: str | None
) -> AgentError:
    return AgentError(
        message, subtype=subtype, transient=transient, cost_usd=cost_usd, session_id=session_id
    )


class BudgetReached(OrchestratorError):
    """A spend cap keeps an agent session from starting.

    Not a failure of the work: the task waits, no attempt is spent.
    ``resets_at`` is when the cap lifts (an ISO time), or '' for "next cycle".
    """

    def __init__(self, message: str, *, cap: str, resets_at: str = "") -> None:
        super().__init__(message)
        self.cap = cap
        self.resets_at = resets_at

    def __reduce__(self):  # keep the fields if it is ever pickled into a Prefect result
        return (_rebuild_budget_reached, (str(self), self.cap, self.resets_at))


def _rebuild_budget_reached(message: str, cap: str, resets_at: str) -> BudgetReached:
    return BudgetReached(message, cap=cap, resets_at=resets_at)
