"""Agent-slot calls on a SQLite and a PostgreSQL Prefect server: Prefect's public client against ours.

Each round, 16 sessions ask for a slot of one limit at the same moment and
give it back; 8 rounds per way of asking, after one that warms up. A SQLite server answers asks that
meet another write with a 503 that Prefect's client waits 2 s on; ours asks
again within milliseconds (``tasks.slots``). Prints p50, p95 and the worst
wait per backend and way. PostgreSQL needs its binaries and a ``postgres``
user (see ``bench/postgres.py``); without them only SQLite is measured.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deployments import control
from deployments.server import free_port, start_server

from . import postgres

SESSIONS, ROUNDS = 16, 8


def measure(api_url: str, backend: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from tasks import slots

    async def asks(public: bool) -> list[float]:
        waits: list[float] = []
        async with get_client() as client:
            name = f"bench-slots-{'public' if public else 'ours'}"
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=SESSIONS))
            slots._backends[str(client.api_url)] = public  # the way of asking, whatever the server says

            async def session() -> None:
                asked = time.perf_counter()
                async with slots.agent_slot(name):
                    waits.append(time.perf_counter() - asked)

            await asyncio.gather(*[session() for _ in range(SESSIONS)])  # warm-up: connections, caches
            waits.clear()
            for _ in range(ROUNDS):
                await asyncio.gather(*[session() for _ in range(SESSIONS)])
        return waits

    lines = []
    with control.api(api_url):
        for public in (True, False):
            waits = asyncio.run(asks(public))
            p95 = statistics.quantiles(waits, n=20)[18]
            lines.append(f"{backend:10} {'public client' if public else 'ours':13} slot wait p50 "
                         f"{statistics.median(waits) * 1000:5.0f} ms, p95 {p95 * 1000:5.0f} ms, "
                         f"worst {max(waits) * 1000:5.0f} ms ({len(waits)} asks, {SESSIONS} at once)")
    return lines


def main(argv: list[str]) -> int:
    root = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    server = start_server(root / "sqlite", free_port())
    try:
        lines = measure(server.api_url, "SQLite")
    finally:
        server.stop()
    if not postgres.available:
        lines.append(f"PostgreSQL: not measured ({postgres.INSTALL})")
    else:
        with postgres.cluster() as url:
            server = start_server(root / "postgresql", free_port(), startup_timeout_s=180, database_url=url)
            try:
                lines += measure(server.api_url, "PostgreSQL")
            finally:
                server.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
