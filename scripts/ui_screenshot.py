"""Save screenshots of the Prefect UI showing one cycle of the offline demo.

    .venv/bin/python scripts/ui_screenshot.py [--out DIR]

Starts a Prefect server on a free loopback port (its database in a temporary
folder), runs the demo cycle against it with the scripted model, then opens
the cycle's flow run in headless Chromium and saves three PNGs: the run with
its artifacts, the summary artifact and the verdicts table. Needs Debian's
``chromium``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.server import free_port, start_server
from orchestrator.adapters.store import Store
from orchestrator.demo.sample import demo_scenario, make_sample_project, write_portfolio
from orchestrator.demo.scripted import ScriptedModel
from scripts.headless import Chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="orch-ui-"))
    config = write_portfolio(root, make_sample_project(root))
    server = start_server(root / "data", free_port())
    os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        with ScriptedModel(demo_scenario()) as model:
            os.environ.update(model.env())
            from flows.project_cycle import project_cycle

            summary = asyncio.run(project_cycle(project="calc", config=str(config)))
        run_id = Store.for_project(root / "data", "calc").get_cycle(summary.cycle_id).flow_run_id
        for path in shoot(server.ui_url, run_id, args.out):
            print(path)
    finally:
        server.stop()


def shoot(ui_url: str, run_id: str, out: Path) -> list[Path]:
    """The run's page with its artifacts, then each artifact of the cycle's story."""
    with Chromium(height=1400) as browser:
        browser.open(f"{ui_url}/runs/flow-run/{run_id}")
        browser.wait_for_text("merge: calc")
        browser.click_text("Artifacts")
        browser.wait_for_text("summary-calc", "verdicts-calc")
        time.sleep(1)  # let the timeline graph finish drawing
        shots = [browser.screenshot(out / "ui-cycle-run.png")]
        ids = asyncio.run(artifact_ids(run_id))
        for key, ready in (("summary-calc", "Total: $"), ("verdicts-calc", "Make add faster")):
            browser.open(f"{ui_url}/artifacts/artifact/{ids[key]}")
            browser.wait_for_text(ready)
            shots.append(browser.screenshot(out / f"ui-{key}.png"))
    return shots


async def artifact_ids(run_id: str) -> dict[str, str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]))
        )
    return {a.key: str(a.id) for a in artifacts if a.key}


if __name__ == "__main__":
    main()
