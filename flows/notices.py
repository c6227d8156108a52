"""Notices from flow code to the project's webhook (see ``orchestrator.adapters.webhooks``).

Sending never raises and never fails a cycle: a receiver that is down costs
a few logged retries. ``ORCH_WEBHOOK_ATTEMPTS`` and ``ORCH_WEBHOOK_BACKOFF_S``
tune them (the tests shorten the wait).
"""

from __future__ import annotations

import os

from prefect import get_run_logger

from orchestrator.adapters.webhooks import Event, Notice, adeliver
from orchestrator.domain.models import CycleStatus, CycleSummary
from orchestrator.stages.context import ProjectContext


async def notify(ctx: ProjectContext, event: Event, title: str, details: dict[str, str] | None = None,
                 link: str = "") -> bool:
    """Send one notice to the project's (or the portfolio's) webhook, if it has one."""
    url = ctx.portfolio.webhook_for(ctx.config)
    if not url:
        return False
    notice = Notice(event=event, project=ctx.name, title=title, details=details or {}, link=link)
    sent = await adeliver(url, notice, attempts=int(os.environ.get("ORCH_WEBHOOK_ATTEMPTS", "4")),
                          backoff_s=float(os.environ.get("ORCH_WEBHOOK_BACKOFF_S", "1.0")))
    if not sent:
        get_run_logger().warning("The %s notice of %s was not delivered (see the log above)", event.value, ctx.name)
    return sent


async def cycle_ended(ctx: ProjectContext, summary: CycleSummary) -> None:
    """``cycle_finished`` (or ``cycle_failed``) with what the cycle did."""
    failed = summary.status is CycleStatus.failed
    details = {"status": summary.status, "merged": str(len(summary.merged)),
               "not merged": str(len(summary.rejected)), "cost": f"${summary.total_cost_usd:.4f}"}
    if summary.message:
        details["note"] = summary.message
    verb = "failed" if failed else f"ended: {summary.status}" if summary.status is not CycleStatus.done else "finished"
    title = (f"Cycle {summary.cycle_id} {verb}: merged {len(summary.merged)}, "
             f"not merged {len(summary.rejected)}")
    await notify(ctx, Event.cycle_failed if failed else Event.cycle_finished, title, details)
