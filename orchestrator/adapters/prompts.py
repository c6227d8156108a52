"""The markdown prompt contracts in ``prompts/``, and untrusted text in prompts.

Text that does not come from the project's owner (issues, backlog items,
test and lint output, rejection reasons, what earlier agents wrote) goes
into a prompt only inside an ``<untrusted-data>`` block (:func:`untrusted`),
which every role's contract says never to take instructions from.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

from orchestrator.domain.errors import ConfigError
from orchestrator.domain.models import Role, Task, TaskType

_PACKAGED = Path(__file__).resolve().parents[1] / "_prompts"  # where a wheel install puts them
_SOURCE = Path(__file__).resolve().parents[2] / "prompts"  # a checkout or editable install


def prompts_dir() -> Path:
    """The folder holding the prompt files (``ORCH_PROMPTS_DIR`` overrides)."""
    override = os.environ.get("ORCH_PROMPTS_DIR")
    if override:
        return Path(override)
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE


def prompt_name(role: Role, task_type: TaskType | None = None) -> str:
    """File stem of a role's prompt: ``planner``, ``worker_fix``, ``judge`` ..."""
    if role is Role.worker:
        return f"worker_{(task_type or TaskType.code).value}"
    return role.value


@cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_prompt(role: Role, task_type: TaskType | None = None) -> str:
    """The system prompt for a role (and, for workers, a task type)."""
    path = prompts_dir() / f"{prompt_name(role, task_type)}.md"
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file missing; reinstall or set ORCH_PROMPTS_DIR")
    return _read(path)


# Whatever in the data could be read as this block's own tags: "<" that opens
# "untrusted-data" (or "/untrusted-data"), however spaced or cased.
_TAG = re.compile(r"<(?=\s*/?\s*untrusted[\s_-]*data)", re.IGNORECASE)


def untrusted(text: str, source: str) -> str:
    """``text`` as data in a prompt: one ``<untrusted-data source="...">`` block.

    The data cannot close its block early or open one of its own: every tag
    of the kind inside it loses its ``<`` (written ``&lt;``). ``source`` says
    where the text came from (it is the orchestrator's words, kept to one line).
    """
    body = _TAG.sub("&lt;", text.strip("\n"))
    where = re.sub(r'["<>\s]+', " ", source).strip()
    return f'<untrusted-data source="{where}">\n{body}\n</untrusted-data>'


def task_source(task: Task) -> str | None:
    """Where a task's title and description came from; None when its owner wrote them (``orch add-task``)."""
    if task.source == "manual":
        return None
    item = task.backlog_item or ""
    if item.startswith("#"):
        return f"task written by the planner from GitHub issue {item}"
    if item:
        return f"task written by the planner from backlog item {item}"
    return "task written by the planner"


def task_text(task: Task) -> str:
    """A task's title and description for a prompt: as they are when its owner wrote them, else as data."""
    text = f"{task.title}\n\n{task.description}".strip()
    source = task_source(task)
    return text if source is None else untrusted(text, source)
