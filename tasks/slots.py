"""The portfolio-wide cap on agent sessions: a Prefect global concurrency limit.

Every agent session (planner, worker, reviewer, resolver) holds one slot of
the portfolio's limit while it runs, so ``max_total_workers`` bounds the
sessions of all projects' cycles together, wherever they run.

Slots are asked for with Prefect's public client on a PostgreSQL server.
A SQLite server answers a slot request that meets another write with
"database is locked" (HTTP 503), and Prefect's client waits 2 s before it
asks again. Sessions start in bursts (all workers of a cycle at once), so
that wait would fall on most cycles' critical path: on SQLite (or a server
that does not name its database, see ``deployments.server``) a 503 is asked
again after a few milliseconds, through the httpx client inside Prefect's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from typing import Any
from uuid import UUID

import anyio
import httpx
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError

from orchestrator.adapters.agent import SlotWatch
from orchestrator.adapters.internals import prefect_http
from orchestrator.adapters.retry import Again, RetryPolicy, acall, retry_after_s
from orchestrator.domain.config import PortfolioConfig
from orchestrator.domain.errors import OrchestratorError
from orchestrator.domain.prefect_server import BACKEND_VARIABLE, BACKENDS
from orchestrator.stages.context import Services

logger = logging.getLogger(__name__)
# Renewed while the session runs. A killed session's slot (a stopped `orch start` kills its runs)
# frees itself at the lease's end and the server's next repossessor pass (every 15 s).
LEASE_S = 60
RENEW_EVERY_S = LEASE_S / 3
BUSY_RETRIES = 50
LIMIT_ATTEMPTS = 5  # reads and writes of the limit, while other callers race this one
# A full pool is asked again when the server says (Retry-After, else 1 s), for as long as it stays full.
_FULL = RetryPolicy(attempts=None, base_s=1.0, factor=1.0)
_RENEW = RetryPolicy(attempts=4, base_s=1.0)


async def set_agent_limit(portfolio: PortfolioConfig) -> str:
    """Make the portfolio's limit exist with ``max_total_workers`` slots: the last writer wins.

    Made before any session asks for a slot (every cycle calls this first),
    as sessions ask strictly: a missing limit is an error, not an unlimited
    pool. Safe with any number of callers at once (cycles, hosts): a create
    that meets one made meanwhile reads it again. A Prefect API failure is one
    OrchestratorError naming the server. A portfolio without a cap has no
    limit. Returns a warning when the limit had another size (hosts sharing
    the portfolio's name disagree), else ''.
    """
    name, size = portfolio.agent_pool, portfolio.max_total_workers
    if size is None:
        return ""
    async with get_client() as client:
        try:
            previous = await _ensure_limit(client, name, size)
        except (httpx.HTTPError, PrefectHTTPStatusError, ObjectAlreadyExists, ObjectNotFound) as exc:
            raise OrchestratorError(
                f"the Prefect server at {client.api_url} could not set up the agent limit {name!r}: "
                f"{exc}; check the server (`orch doctor`) and run again") from exc
    if previous is None or previous == size:
        return ""
    return (f"the agent limit {name!r} had {previous} slots and now has {size}, as {portfolio.source} "
            f"says: hosts sharing the portfolio name {portfolio.name!r} should agree on max_total_workers")


async def _ensure_limit(client: PrefectClient, name: str, size: int) -> int | None:
    """Read, then create or resize, again while other callers get in between; the size it had."""
    for _ in range(LIMIT_ATTEMPTS):
        try:
            current = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=size))
                return None
            except ObjectAlreadyExists:  # another caller made it since we read: read it again
                continue
        if current.limit == size:
            return size
        try:
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=size))
        except ObjectNotFound:  # deleted since we read: make it again
            continue
        return current.limit
    raise OrchestratorError(f"the agent limit {name!r} changed under {LIMIT_ATTEMPTS} attempts to set it to "
                            f"{size}: run again")


def services() -> Services:
    """What the tasks' project contexts use: this process's ledger, and slots of the agent limit."""
    return Services(slots=agent_slot)


@asynccontextmanager
async def agent_slot(pool: str, watch: SlotWatch | None = None) -> AsyncIterator[None]:
    """One slot of ``pool`` for the length of a session; ``watch`` hears of a wait for it."""
    async with get_client() as client:
        with ExitStack() as wait:  # the wait, if the pool is full, ends once the slot is ours

            def full() -> None:
                if watch is not None:
                    wait.enter_context(watch.waiting())

            lease = await _acquire(client, pool, full)
        renewal = asyncio.ensure_future(_keep_renewing(client, pool, lease))
        try:
            yield
        finally:
            renewal.cancel()
            with anyio.CancelScope(shield=True):  # a cancelled session still gives its slot back
                try:
                    if await _on_postgresql(client):
                        await client.release_concurrency_slots_with_lease(lease)
                    else:
                        await _post(client, "decrement-with-lease", {"lease_id": str(lease)})
                except (httpx.HTTPError, OSError) as exc:  # the session's work stands; the lease runs out
                    logger.warning("Could not give back slot %s of %s (it frees itself within %d s): %s",
                                   lease, pool, LEASE_S, exc)


async def _keep_renewing(client: PrefectClient, pool: str, lease: UUID) -> None:
    """Renew the lease every ``RENEW_EVERY_S`` (a third of its length) while the session runs.

    A renewal that keeps failing is logged, not raised: the session's work
    stands, and at worst the slot frees itself early.
    """
    while True:
        await anyio.sleep(RENEW_EVERY_S)
        try:
            await acall(lambda: client.renew_concurrency_lease(lease, LEASE_S), _RENEW, _transient)
        except Exception as exc:  # never the session's end: it runs on without the renewal
            logger.warning("Could not renew slot %s of %s (it may free itself within %d s): %s",
                           lease, pool, LEASE_S, exc)


def _transient(outcome: object) -> Again | None:
    """A lost connection or a server error: try again; anything else (a lease gone) is final."""
    if isinstance(outcome, httpx.TransportError):
        return Again()
    if isinstance(outcome, PrefectHTTPStatusError) and outcome.response.status_code >= 500:
        return Again()
    return None


async def _acquire(client: PrefectClient, pool: str, on_full: Callable[[], None]) -> UUID:
    body = {"names": [pool], "slots": 1, "mode": "concurrency", "lease_duration": LEASE_S}

    def full(outcome: httpx.Response | Exception) -> Again | None:
        if not isinstance(outcome, httpx.Response) or outcome.status_code != 423:
            return None
        return Again(retry_after_s(outcome.headers.get("Retry-After")))

    def told(number: int, outcome: httpx.Response | Exception, wait_s: float) -> None:
        if number == 1:  # the first wait starts it; the slot ends it
            on_full()

    public = await _on_postgresql(client)

    async def ask() -> httpx.Response:
        if not public:
            return await _post(client, "increment-with-lease", body)
        try:
            return await client.increment_concurrency_slots_with_lease(
                names=[pool], slots=1, mode="concurrency", lease_duration=LEASE_S)
        except PrefectHTTPStatusError as exc:  # 423, the pool is full: asked again as below
            if exc.response.status_code != 423:
                raise
            return exc.response

    response = await acall(ask, _FULL, full, on_retry=told)
    granted = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
    if not granted.limits:
        raise OrchestratorError(f"the Prefect concurrency limit {pool!r} is missing; run the cycle again to make it")
    return granted.lease_id


_backends: dict[str, bool] = {}  # by API URL: whether the server's database is PostgreSQL


async def _on_postgresql(client: PrefectClient) -> bool:
    """Whether the server says its database is PostgreSQL (asked once per server and process)."""
    url = str(client.api_url)
    if url not in _backends:
        try:
            said = await client.read_variable_by_name(BACKEND_VARIABLE)
        except (httpx.HTTPError, PrefectHTTPStatusError):
            return False  # not remembered: asked again next time
        _backends[url] = said is not None and said.value == BACKENDS["postgresql+asyncpg"]
    return _backends[url]


async def _post(client: PrefectClient, action: str, body: dict[str, Any]) -> httpx.Response:
    """POST to the limits API, asked again soon while the server's database is busy (503).

    Sent with httpx's own ``send`` on Prefect's client (its URL, auth and
    headers): Prefect's ``send`` sleeps 2 s after a 503 even with retries off.
    """
    http = prefect_http(client)

    async def send() -> httpx.Response:
        request = http.build_request("POST", f"/v2/concurrency_limits/{action}", json=body)
        return await httpx.AsyncClient.send(http, request)

    # Asked again after 20 to 70 ms: soon, and spread out, as the requests that met came in a burst.
    busy_policy = RetryPolicy(attempts=BUSY_RETRIES, base_s=0.02, factor=1.0, jitter_s=0.05)
    response = await acall(send, busy_policy, _busy)
    if response.status_code != 423:
        response.raise_for_status()
    return response


def _busy(outcome: httpx.Response | Exception) -> Again | None:
    """A busy database (503), or a kept-alive connection the server closed: ask again soon."""
    if isinstance(outcome, httpx.TransportError):
        return Again()
    if isinstance(outcome, httpx.Response) and outcome.status_code == 503:
        return Again()
    return None
