"""The store's test results by tree: a tree tested once with a command is not tested again.

One row per key (:func:`orchestrator.stages.test_runs.result_key`: the tree's git id, the
command and the environment's digest). :class:`.store.Store` holds these methods; they are
apart only to keep each file readable.
"""

from __future__ import annotations

import sqlite_utils

from orchestrator.domain.models import CheckResult, utcnow


class TestResults:
    """The test-result half of :class:`.store.Store` (it has the database)."""

    __test__ = False  # not a pytest class, whatever its name
    db: sqlite_utils.Database

    def tested(self, key: str, since: str) -> CheckResult | None:
        """The result recorded under ``key`` at or after ``since`` (an ISO time), if any."""
        row = self.db.execute("SELECT result FROM test_results WHERE key = ? AND tested_at >= ?",
                              [key, since]).fetchone()
        return CheckResult.model_validate_json(row[0]) if row else None

    def record_tested(self, key: str, tree: str, result: CheckResult, forget_before: str) -> None:
        """Keep ``result`` under ``key``; results recorded before ``forget_before`` go."""
        self.db.table("test_results").upsert(
            {"key": key, "tree": tree, "command": result.command,
             "result": result.model_dump_json(), "tested_at": utcnow()}, pk="key")
        self.db.execute("DELETE FROM test_results WHERE tested_at < ?", [forget_before])

    def recent_test_seconds(self, limit: int) -> list[float]:
        """How long the last ``limit`` kept test runs took (newest first)."""
        rows = self.db.execute("SELECT json_extract(result, '$.duration_s') FROM test_results "
                               "ORDER BY tested_at DESC LIMIT ?", [limit])
        return [float(r[0]) for r in rows if r[0] is not None]
