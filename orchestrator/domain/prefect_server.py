"""Words shared by the code that starts a Prefect server and the code that asks it for agent slots."""

from __future__ import annotations

BACKENDS = {"postgresql+asyncpg": "PostgreSQL", "sqlite+aiosqlite": "SQLite"}
"""The databases a Prefect server runs on, by the scheme of their URL."""
BACKEND_VARIABLE = "orch-server-database"
"""A Prefect variable, kept in the server's own database, naming that database's kind.

The server does not tell its clients (its settings hide the URL), and a
worker on another host must know it: several hosts on a SQLite server fight
over one file, and slots are asked for differently there. A server ``orch``
starts says it here; any client reads it, and it stays true for whatever
server later runs on the same database.
"""
