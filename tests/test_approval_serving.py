"""The approval gate of deployment runs, served by ``orch start`` on a real Prefect server.

A waiting run is suspended in the server's database: it survives a restart of
the server and of ``orch start``, resumes when ``orch approve`` decides, takes
a decision from the Prefect UI's input form, and gives way to the run
scheduled at its deadline when nobody decides.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from cycles import set_fields
from test_serving import env_for, interrupt, orch, orch_prefect, read, sample, serve, wait_for

from deployments import control
from deployments.server import Server, free_port, start_server
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario
from orchestrator.demo.scripted import ScriptedModel
from orchestrator.domain.models import ApprovalStage, TaskStatus
from orchestrator.domain.state import Approval

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("agent_env")]


def state_of(server: Server, run_id: str) -> str:
    run = read(server, lambda c: c.read_flow_run(UUID(run_id)))
    return str(run.state.name if run.state else "")


def waiting(store: Store) -> Approval | None:
    rows = store.waiting_approvals()
    return rows[0] if rows else None


def test_a_waiting_cycle_survives_restarts_and_every_way_of_deciding_it(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(tmp_path / "srv", port=port)
    config = sample(tmp_path, name="gated")
    set_fields(config, require_approval="plan", approval_timeout_minutes=60)
    store = Store.for_project(tmp_path / "data", "gated")
    try:
        with ScriptedModel(demo_scenario()) as model:
            env = env_for(server, model, tmp_path / "home")
            start = serve(env, config, tmp_path / "start.log")
            try:
                wait_for(lambda: orch_prefect(env, "deployment", "run", "project-cycle/gated").returncode == 0,
                         "the deployment to be served", 60)
                first = wait_for(lambda: waiting(store), "the plan to wait for approval")
                wait_for(lambda: state_of(server, first.flow_run_id) == "Suspended", "the run to suspend")
            finally:
                assert interrupt(start, tmp_path / "start.log") == 0
            # A run at the deadline is scheduled, for the default to apply if nobody decides.
            deadline_runs = [r for r in read(server, lambda c: c.read_flow_runs())
                             if r.parameters.get("cycle_id") == first.cycle_id]
            assert [r.state.name for r in deadline_runs] == ["Scheduled"]

            # Both the server and orch start go down and come back; the run is still suspended.
            server.stop()
            server = start_server(tmp_path / "srv", port=port)
            start = serve(env, config, tmp_path / "again.log")
            try:
                assert state_of(server, first.flow_run_id) == "Suspended"
                assert "worker" not in {r.role for r in model.requests}
                approved = orch(env, "approve", first.cycle_id, "-c", str(config))
                assert approved.returncode == 0 and "resumes now" in approved.stdout, approved.stdout + approved.stderr
                wait_for(lambda: store.get_cycle(first.cycle_id).status == "done", "the approved cycle to end")
                assert state_of(server, first.flow_run_id) == "Completed"
                assert len(store.merged_task_ids(first.cycle_id)) == 2
                assert len({r.session_id for r in model.requests if r.role == "planner"}) == 1

                # The next cycle waits too (a rejected task is pending); the UI's form rejects it.
                assert orch_prefect(env, "deployment", "run", "project-cycle/gated").returncode == 0
                second = wait_for(lambda: waiting(store), "the second plan to wait")
                wait_for(lambda: state_of(server, second.flow_run_id) == "Suspended", "the second run to suspend")
                assert control.resume_waiting(server.api_url, second.flow_run_id, False, "not this week")
                wait_for(lambda: store.get_cycle(second.cycle_id).status == "rejected", "the rejection")
                decided = store.approval(second.cycle_id, ApprovalStage.plan)
                assert decided is not None and (decided.decided_by, decided.reason) == ("Prefect UI", "not this week")

                # Nobody decides the third: at its deadline the scheduled run applies the default.
                set_fields(config, approval_timeout_minutes=0.05, approval_default="approve")
                assert orch_prefect(env, "deployment", "run", "project-cycle/gated").returncode == 0
                third = wait_for(lambda: waiting(store), "the third plan to wait")
                wait_for(lambda: store.get_cycle(third.cycle_id).status == "done", "the default to apply", 90)
                decided = store.approval(third.cycle_id, ApprovalStage.plan)
                assert decided is not None and (decided.status, decided.decided_by) == ("approved", "timeout")
                wait_for(lambda: state_of(server, third.flow_run_id) == "Cancelled", "the waiting run to give way", 30)
            finally:
                assert interrupt(start, tmp_path / "again.log") == 0
    finally:
        server.stop()
    retried = [t for t in store.list_tasks() if t.title == "Make add faster"]
    assert retried[0].attempts == 2 and retried[0].status is TaskStatus.pending
