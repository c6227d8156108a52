"""Loading the markdown prompt contracts in ``prompts/``."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from .errors import ConfigError
from .models import Role, TaskType

_PACKAGED = Path(__file__).parent / "_prompts"  # where a wheel install puts them
_SOURCE = Path(__file__).resolve().parent.parent / "prompts"  # a checkout or editable install


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
