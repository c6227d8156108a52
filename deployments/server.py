"""A long-running Prefect server: schedules, workers and the UI need one.

The ephemeral server Prefect starts when ``PREFECT_API_URL`` is unset runs
no scheduler, so ``orch start`` finds a server to use (the one
``PREFECT_API_URL`` names, one it started before that is still up, or one
on Prefect's default local port) or starts ``prefect server start`` itself,
with its SQLite database in the portfolio's data dir.

Only the standard library is used here: asking whether a server is up must
not cost the seconds that importing Prefect does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from orchestrator.domain.errors import OrchestratorError
from orchestrator.domain.prefect_server import BACKEND_VARIABLE, BACKENDS

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
DATABASE_VARS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
"""Prefect's names for the server's database URL (it reads either)."""
LEASE_STORAGE_VAR = "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"
DURABLE_LEASES = "prefect.server.concurrency.lease_storage.filesystem"
"""Where a server keeps its concurrency leases so that they outlive a restart.

Prefect's default keeps them in the server's memory while the slots they
hold are counted in its database: a restart while agents hold slots forgets
the leases, so neither their holders nor the lease reaper can ever give
those slots back, and once the cap is full every session waits for ever.
"""


@dataclass
class Server:
    """A Prefect server in use; ``process`` is set when this process started it."""

    api_url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/").removesuffix("/api")

    def stop(self, timeout_s: float = 15) -> None:
        """Stop the server if this process started it; a reused one keeps running."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when a Prefect API answers its health check at ``api_url``."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def lease_storage(api_url: str, timeout_s: float = 5.0) -> str | None:
    """The module a server keeps its concurrency leases in (from its settings), or None if it won't say."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/admin/settings", timeout=timeout_s) as response:
            return str(json.load(response)["server"]["concurrency"]["lease_storage"])
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None


def home(data_dir: Path) -> Path:
    """Where a server this orchestrator starts keeps its database and log."""
    return data_dir / "prefect"


def running_server(data_dir: Path) -> str | None:
    """The API URL of a reachable server, or None.

    $PREFECT_API_URL when set (and nothing else: the user chose it);
    otherwise the server ``orch start`` last started, or Prefect's default port.
    """
    chosen = os.environ.get("PREFECT_API_URL")
    candidates = [chosen] if chosen else [_recorded_url(data_dir), DEFAULT_API_URL]
    for url in dict.fromkeys(u for u in candidates if u):
        if healthy(url):
            return url
    return None


def ensure_server(data_dir: Path, port: int | None = None, startup_timeout_s: float = 90,
                  database_url: str | None = None) -> Server:
    """A reachable server: reuse one that is up, or start ``prefect server start`` on loopback."""
    url = running_server(data_dir)
    if url is not None:
        return Server(url)
    return start_server(data_dir, port, startup_timeout_s, database_url)


def backend_of(database_url: str | None, source: str = "--database-url") -> str:
    """'PostgreSQL' or 'SQLite' for a database URL (None: Prefect's default, SQLite); an unknown one is an error."""
    if not database_url:
        return "SQLite"
    scheme = database_url.split("://", 1)[0] if "://" in database_url else ""
    if scheme not in BACKENDS:
        raise OrchestratorError(
            f"{source}: a Prefect server's database URL starts with postgresql+asyncpg:// or "
            f"sqlite+aiosqlite://, not {scheme + '://' if scheme else 'that'}")
    return BACKENDS[scheme]


def database_url_from_env() -> tuple[str | None, str]:
    """The database URL this environment gives a server it starts, and the variable it came from."""
    for var in DATABASE_VARS:
        if value := os.environ.get(var, "").strip():
            return value, var
    return None, ""


def start_server(data_dir: Path, port: int | None = None, startup_timeout_s: float = 90,
                 database_url: str | None = None, host: str = "127.0.0.1") -> Server:
    """Start a server listening on ``host`` (loopback by default) and wait until it answers.

    Its database is ``database_url`` when given, else the one the environment
    names (:data:`DATABASE_VARS`), else SQLite under ``data_dir``.
    """
    backend = backend_of(database_url) if database_url else backend_of(*database_url_from_env())
    port = port or (4200 if _port_free(4200) else free_port())
    server_home = home(data_dir)
    server_home.mkdir(parents=True, exist_ok=True)
    log_path = server_home / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    api_url = f"http://127.0.0.1:{port}/api"  # this process asks on loopback whatever the server listens on
    env.update(
        PREFECT_HOME=str(server_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The UI asks the browser to call the API at this address; it does not follow --port.
        PREFECT_UI_API_URL=public_api_url(host, port),
    )
    env.setdefault(LEASE_STORAGE_VAR, DURABLE_LEASES)  # a user's own choice stands
    if database_url:
        env.update(dict.fromkeys(DATABASE_VARS, database_url))  # either name: the chosen URL wins
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl+C reaches us first; we stop it in order
        )
    server = Server(api_url, process, log_path)
    deadline = time.monotonic() + startup_timeout_s
    while not healthy(server.api_url, timeout_s=1):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise OrchestratorError(
                f"the Prefect server on port {port} did not start (log: {log_path}): {tail or 'no output'}"
            )
        time.sleep(0.25)
    (server_home / "server.json").write_text(json.dumps({"api_url": server.api_url, "pid": process.pid}))
    _say_backend(server.api_url, backend)
    return server


def public_api_url(host: str, port: int) -> str:
    """The API's address as other hosts (and browsers) reach it."""
    if host in ("0.0.0.0", "::", ""):  # every interface: name the machine
        host = socket.getfqdn()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/api"


def _say_backend(api_url: str, backend: str) -> None:
    """Write :data:`BACKEND_VARIABLE` on the server; a server that refuses it still serves."""
    body = json.dumps({"name": BACKEND_VARIABLE, "value": backend}).encode()
    try:
        _request(api_url, "POST", "/variables/", body)
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # 409: it exists (the database has had a server before)
            return
        with suppress(urllib.error.URLError, OSError):
            _request(api_url, "PATCH", f"/variables/name/{BACKEND_VARIABLE}", body)
    except (urllib.error.URLError, OSError):
        return


def server_backend(api_url: str) -> str | None:
    """'PostgreSQL' or 'SQLite' when the server's database says so (see :data:`BACKEND_VARIABLE`), else None."""
    try:
        found = json.loads(_request(api_url, "GET", f"/variables/name/{BACKEND_VARIABLE}"))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    value = found.get("value") if isinstance(found, dict) else None
    return value if value in BACKENDS.values() else None


def online_workers(api_url: str) -> dict[str, int]:
    """The work pools with online workers, and how many each has ({} when the server won't say)."""
    try:
        pools = json.loads(_request(api_url, "POST", "/work_pools/filter", b"{}"))
        found = {}
        for pool in pools:
            workers = json.loads(_request(api_url, "POST", f"/work_pools/{pool['name']}/workers/filter", b"{}"))
            if online := sum(1 for w in workers if w.get("status") == "ONLINE"):
                found[pool["name"]] = online
        return found
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return {}


def shared_sqlite(api_url: str, backend: str | None, serving_here: bool = False) -> str:
    """A warning when a SQLite server (``backend``, as :func:`server_backend` read it) seems to serve
    several hosts, else ''. Hosts are counted as the README sets them up: one pool of workers each,
    and this process when ``serving_here`` (``orch start`` serves without a pool)."""
    if backend != "SQLite":
        return ""
    pools = online_workers(api_url)
    if sum(pools.values()) + serving_here < 2:
        return ""
    named = ", ".join(f"{pool} ({n})" for pool, n in sorted(pools.items()))
    return (f"this server's database is SQLite, and workers are online in pools {named}"
            + (" besides this orch start" if serving_here else "") + ": hosts that share a SQLite server "
            "contend for one database file; run it on PostgreSQL (orch server --database-url postgresql+asyncpg://...)")


def _request(api_url: str, method: str, path: str, body: bytes | None = None, timeout_s: float = 5.0) -> bytes:
    request = urllib.request.Request(f"{api_url.rstrip('/')}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return bytes(response.read())


def _recorded_url(data_dir: Path) -> str:
    try:
        return str(json.loads((home(data_dir) / "server.json").read_text())["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
