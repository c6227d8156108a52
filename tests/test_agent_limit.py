"""The portfolio's agent limit, set up by many callers at once, on SQLite and on PostgreSQL.

Prefect's own "upsert" reads, then creates: two callers that both find no
limit both create it, and the second fails. Every cycle, the portfolio flow,
``orch start`` and ``orch deploy`` set the limit up, so two hosts (or two
cycles) starting together on a fresh server must all succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import needs
import pytest
from prefect import get_client
from prefect.client.orchestration import PrefectClient

from bench import postgres
from deployments import control
from deployments.server import Server, free_port, server_backend, start_server
from orchestrator.demo.sample import make_sample_project

pytestmark = [pytest.mark.slow, pytest.mark.guarantee]

BIN = Path(sys.executable).parent
CALLER = """
import os, sys, time
from pathlib import Path
from deployments import control
from orchestrator.adapters.portfolio_file import load_portfolio
portfolio, go = load_portfolio(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
print("note:", control.set_agent_limit(os.environ["PREFECT_API_URL"], portfolio), flush=True)
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A fresh Prefect server, started as `orch start` starts one, on SQLite or PostgreSQL."""
    home = tmp_path_factory.mktemp(f"prefect-{request.param}")
    if request.param == "sqlite":
        running = start_server(home, port=free_port())
        yield running
        running.stop()
        return
    if not postgres.available:
        pytest.skip(f"needs PostgreSQL and its postgres user: {postgres.INSTALL}")
    with postgres.cluster() as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", url)
        running = start_server(home, port=free_port(), startup_timeout_s=180)
        yield running
        running.stop()


def portfolio(root: Path, name: str, cap: int, project: str = "app") -> Path:
    """A portfolio ``name`` with one project of its own and its own data dir (one host's file)."""
    root.mkdir(parents=True, exist_ok=True)
    path = make_sample_project(root)
    config = root / f"{project}.json"
    config.write_text(json.dumps({"name": name, "data_dir": "data", "max_total_workers": cap,
                                  "projects": [{"name": project, "path": str(path)}]}))
    return config


def limits(server: Server, name: str) -> list[int]:
    async def read() -> list[int]:
        async with get_client() as client:
            return [limit.limit for limit in await client.read_global_concurrency_limits(limit=200)
                    if limit.name == name]

    with control.api(server.api_url):
        return anyio.run(read)


def env_for(server: Server, home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home), "COLUMNS": "200"}


def test_many_callers_at_once_all_succeed_and_make_one_limit(server: Server, tmp_path: Path) -> None:
    config = portfolio(tmp_path / "host", "together", cap=3)
    go = tmp_path / "go"
    env = env_for(server, tmp_path / "home")
    callers = [subprocess.Popen([sys.executable, "-c", CALLER, str(config), str(go)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    try:
        for caller in callers:  # every one has imported Prefect and waits at the line
            assert caller.stdout is not None and caller.stdout.readline().strip() == "ready"
        go.touch()
        outputs = [caller.communicate(timeout=120)[0] for caller in callers]
    finally:
        for caller in callers:
            if caller.poll() is None:
                caller.kill()
    assert [c.returncode for c in callers] == [0] * 6, outputs
    assert all(out.strip() == "note:" for out in outputs), outputs  # no warning: they all agree
    assert limits(server, "orch-agents-together") == [3]


def test_hosts_that_disagree_last_writer_wins_and_is_told(server: Server, tmp_path: Path) -> None:
    first = portfolio(tmp_path / "a", "shared", cap=2, project="a")
    second = portfolio(tmp_path / "b", "shared", cap=5, project="b")
    from orchestrator.adapters.portfolio_file import load_portfolio

    assert control.set_agent_limit(server.api_url, load_portfolio(first)) == ""
    note = control.set_agent_limit(server.api_url, load_portfolio(second))
    assert note == (f"the agent limit 'orch-agents-shared' had 2 slots and now has 5, as {second} says: "
                    "hosts sharing the portfolio name 'shared' should agree on max_total_workers")
    assert limits(server, "orch-agents-shared") == [5]


def test_two_hosts_deploy_at_the_same_instant(server: Server, tmp_path: Path) -> None:
    """The README's multi-host set-up: one server, two portfolio files with one name, two pools."""
    hosts = {h: portfolio(tmp_path / h, "home", cap=2, project=f"proj-{h}") for h in ("a", "b")}
    env = env_for(server, tmp_path / "home")
    deploys = {h: subprocess.Popen([str(BIN / "orch"), "deploy", "-c", str(config), "--pool", f"host-{h}"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for h, config in hosts.items()}
    outputs = {h: p.communicate(timeout=180)[0] for h, p in deploys.items()}
    for h, proc in deploys.items():
        assert proc.returncode == 0, outputs[h]
        assert f"Deployed project-cycle/proj-{h} to work pool 'host-{h}'" in outputs[h], outputs[h]
        assert "Traceback" not in outputs[h] and "Warning" not in outputs[h]

    async def pools() -> dict[str, str | None]:
        async with get_client() as client:
            return {d.name: d.work_pool_name for d in await client.read_deployments()}

    with control.api(server.api_url):
        deployed = anyio.run(pools)
    assert {deployed["proj-a"], deployed["proj-b"]} == {"host-a", "host-b"}
    assert limits(server, "orch-agents-home") == [2]


@needs.postgres
def test_a_server_whose_database_is_down_is_one_error_line(tmp_path: Path) -> None:
    """The server answers its health check, but every request that needs the database fails."""
    config = portfolio(tmp_path / "host", "down", cap=2)
    with postgres.cluster() as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", url)
        running = start_server(tmp_path / "prefect", port=free_port(), startup_timeout_s=180)
    try:  # the cluster is gone now; the server is not
        started = time.monotonic()
        result = subprocess.run([str(BIN / "orch"), "deploy", "-c", str(config)], env=env_for(running, tmp_path / "home"),
                                capture_output=True, text=True, timeout=300)
    finally:
        running.stop()
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"Error: the Prefect server at {running.api_url}"), lines[0]
    assert "orch doctor" in lines[0]
    assert time.monotonic() - started < 240


def test_a_held_slot_is_renewed_while_its_session_runs_and_given_back(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Leases are renewed through Prefect's public API: a live one renews cleanly, a lost one is told."""
    from orchestrator.adapters.portfolio_file import load_portfolio
    from tasks import slots

    monkeypatch.setattr(slots, "RENEW_EVERY_S", 0.3)
    renewed = []
    renew = PrefectClient.renew_concurrency_lease

    async def counted(client: PrefectClient, lease_id: UUID, lease_duration: float) -> object:
        renewed.append(lease_id)  # the real request still goes to the server
        return await renew(client, lease_id, lease_duration)

    monkeypatch.setattr(PrefectClient, "renew_concurrency_lease", counted)
    private = []  # asks that went around Prefect's client (its httpx client inside)
    inside = slots.prefect_http
    monkeypatch.setattr(slots, "prefect_http", lambda client: private.append(client) or inside(client))
    config = load_portfolio(str(portfolio(tmp_path / "host", "leases", cap=1)))
    assert control.set_agent_limit(server.api_url, config) == ""

    async def active() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(config.agent_pool)).active_slots

    async def session() -> tuple[int, int]:
        async with slots.agent_slot(config.agent_pool):
            await anyio.sleep(1.5)  # a few renewals
            during = await active()
        return during, await active()

    async def lost_lease() -> None:
        async with get_client() as client:
            with anyio.move_on_after(1):
                await slots._keep_renewing(client, config.agent_pool, uuid4())

    with control.api(server.api_url), caplog.at_level("WARNING", logger=slots.__name__):
        assert anyio.run(session) == (1, 0)
        assert len(renewed) >= 3 and "Could not renew" not in caplog.text
        anyio.run(lost_lease)
    assert "Could not renew" in caplog.text and "410" in caplog.text
    # On PostgreSQL only Prefect's public client is used; on SQLite its 503s are asked again at once.
    assert bool(private) == (server_backend(server.api_url) == "SQLite")


def test_a_slot_held_through_a_server_restart_is_given_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server `orch start` starts keeps its leases on disk; `orch doctor` warns of one that does not."""
    from deployments.server import LEASE_STORAGE_VAR
    from orchestrator.adapters.portfolio_file import load_portfolio
    from orchestrator.cli.doctor import check_prefect
    from tasks import slots

    home, port = tmp_path / "prefect", free_port()
    running = start_server(home, port=port)
    monkeypatch.setenv("PREFECT_API_URL", running.api_url)
    config = load_portfolio(str(portfolio(tmp_path / "host", "restarts", cap=1)))

    async def active() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(config.agent_pool)).active_slots

    def restart() -> None:
        nonlocal running
        running.stop()
        running = start_server(home, port=port)

    async def session_through_a_restart() -> tuple[int, int]:
        async with slots.agent_slot(config.agent_pool):
            await anyio.to_thread.run_sync(restart)
            during = await active()
        return during, await active()

    try:
        assert control.set_agent_limit(running.api_url, config) == ""
        found = check_prefect(None)
        assert found.ok and not found.warning, found.line()
        with control.api(running.api_url):
            assert anyio.run(session_through_a_restart) == (1, 0)  # held until the end, then given back
        monkeypatch.setenv(LEASE_STORAGE_VAR, "prefect.server.concurrency.lease_storage.memory")
        restart()  # a server started the user's own way, with Prefect's default
        found = check_prefect(None)
    finally:
        running.stop()
    assert found.ok and found.warning, found.line()
    assert "leases in memory" in found.detail and f"{LEASE_STORAGE_VAR}=prefect.server" in found.fix
