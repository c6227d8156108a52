"""Runs whose process is gone are marked Crashed: heartbeats, and an automation that watches them.

A process worker that is stopped (SIGTERM) or dies with its host (SIGKILL)
takes its flow runs' processes with it, and nothing tells the server: the
runs stay Running for ever, and each holds its deployment's one concurrency
slot until that slot's lease runs out. Prefect's own answer is used here:
flow-run processes send a heartbeat event every :data:`HEARTBEAT_S`, and a
proactive automation on the server changes a run that sent one and then
nothing for :data:`SILENT_S` to Crashed. Any other event of the run (a
state change: done, failed, suspended for an approval) ends the watch, so
a run whose process ended on purpose is left alone. Crashed frees the
deployment's slot, and the next run of that project resumes its cycle from
the store (``orchestrator.stages.cycle``).
"""

from __future__ import annotations

from datetime import timedelta

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from tasks.runs import FLOW_NAME

HEARTBEAT_VAR = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
HEARTBEAT_S = 30  # Prefect's shortest interval
SILENT_S = 90  # three beats: one lost on a busy host or a server restart crashes nothing
AUTOMATION = "orch: a cycle whose process is gone is crashed"
WATCHED_FLOWS = [FLOW_NAME, "portfolio"]


def heartbeat_env() -> dict[str, str]:
    """What a flow-run process needs in its environment to send heartbeats."""
    return {HEARTBEAT_VAR: str(HEARTBEAT_S)}


def automation() -> AutomationCore:
    """The automation: a watched flow run that beat, then fell silent, is Crashed."""
    return AutomationCore(
        name=AUTOMATION,
        description=f"A {' or '.join(WATCHED_FLOWS)} run that sent a heartbeat and then nothing for "
                    f"{SILENT_S} s lost its process (a stopped worker, a host gone): it is marked Crashed, "
                    "which frees its deployment's slot; the next run resumes the cycle.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": WATCHED_FLOWS},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},  # another beat, or any state change
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=SILENT_S),
        ),
        actions=[ChangeFlowRunState(
            name="Crashed", state=StateType.CRASHED, force=False,  # a run that ended meanwhile stays ended
            message=f"No heartbeat for {SILENT_S} s: the run's process is gone (its worker stopped, or its host)",
        )],
    )


async def ensure_automation() -> None:
    """Create the automation on the server, or bring an older version of it up to date."""
    wanted = automation()
    async with get_client() as client:
        found = await client.read_automations_by_name(AUTOMATION)
        if not found:
            await client.create_automation(wanted)
            return
        for extra in found[1:]:  # two hosts deployed at the same moment: one is enough
            await client.delete_automation(extra.id)
        await client.update_automation(found[0].id, wanted)
