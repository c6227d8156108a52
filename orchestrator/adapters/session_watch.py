"""What the agent runtime watches in a session's messages: silence, and rate-limit waits.

Claude Code streams a message for each block the model writes and each tool
result. A session that says nothing for too long is hung (a stalled
connection, a CLI that stopped); one that announces a long wait for a rate
limit would sit idle until the reset. The runtime cuts both, to resume them
later under their own id (see :mod:`orchestrator.adapters.agent`).
"""

from __future__ import annotations

import math
import time

import anyio
from claude_agent_sdk import SystemMessage, ToolResultBlock, ToolUseBlock

# Claude Code's Bash tool runs one command for up to 10 minutes, saying nothing meanwhile.
TOOL_ALLOWANCE_S = 600.0

# A rate-limit wait the CLI announces that is longer than this parks the project (see
# ``AgentSpec.park``); shorter ones the CLI sits out itself.
PARK_AFTER_S = 30.0


class Silence:
    """When a session has been quiet too long: ``stall_s`` after the CLI's last message, plus
    ``TOOL_ALLOWANCE_S`` while one of its tool calls has no result yet."""

    def __init__(self, stall_s: float | None) -> None:
        self.stall_s = stall_s
        self.open_calls: set[str] = set()

    def heard(self, message: object) -> None:
        content = getattr(message, "content", None)
        for block in content if isinstance(content, list) else []:
            if isinstance(block, ToolUseBlock):
                self.open_calls.add(block.id)
            elif isinstance(block, ToolResultBlock):
                self.open_calls.discard(block.tool_use_id)

    def limit_s(self) -> float:
        if self.stall_s is None:
            return math.inf
        return self.stall_s + (TOOL_ALLOWANCE_S if self.open_calls else 0.0)

    def deadline(self) -> float:
        return anyio.current_time() + self.limit_s()


def limit_resets_at(message: object) -> float | None:
    """The reset of a rate limit the CLI is about to sit out (a Unix time), when the wait is long."""
    if not (isinstance(message, SystemMessage) and message.subtype == "api_retry"):
        return None
    data = message.data
    wait_s = float(data.get("retry_delay_ms") or 0) / 1000
    if data.get("error_status") != 429 or wait_s < PARK_AFTER_S:
        return None
    return time.time() + wait_s
