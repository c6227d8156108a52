"""A portfolio's validation errors as one line: the field's place in the file, then what is wrong."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

# Error types the config's own validators raise (see orchestrator.domain.config); their
# messages already say what the value was, so it is not appended again.
OWN_ERRORS = frozenset(
    {
        "empty_path",
        "git_ref",
        "project_name",
        "path",
        "missing_backlog_file",
        "log_level",
        "duplicate_name",
        "github_repo",
        "url",
        "env_name",
    }
)


def json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def describe(exc: ValidationError, data: dict[str, Any]) -> str:
    """Render pydantic's errors as one line: the first in full, then a count."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    text = f"{_location(first['loc'], data)}: {_message(first)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return text


def _location(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``('projects', 0, 'max_workers')`` -> ``projects[0] (my-app).max_workers``."""
    out = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str) and name:
                out += f" ({name})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _message(error: Any) -> str:
    """A short lowercase message; the offending value when it helps."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    value = error.get("input")
    # Our own messages already quote the value; pydantic's type errors do not.
    if kind not in OWN_ERRORS and (isinstance(value, str | int | float | bool) or value is None):
        msg += f" (got {json.dumps(value)[:60]})"
    return msg
