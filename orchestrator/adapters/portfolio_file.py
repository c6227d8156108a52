"""Finding and reading the portfolio file.

An explicit path wins, then ``$ORCH_CONFIG``, then ``./orch.json`` or
``./config/portfolio.json``; what the file says is validated by
:func:`orchestrator.domain.config.portfolio_from_dict`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.domain.config import PortfolioConfig, portfolio_from_dict
from orchestrator.domain.errors import ConfigError

CONFIG_ENV = "ORCH_CONFIG"
"""Environment variable naming the portfolio file when no path is given."""

DEFAULT_CONFIG_PATHS = (Path("orch.json"), Path("config/portfolio.json"))
"""Files tried, relative to the current directory, when nothing else names one."""


def find_config(path: str | Path | None = None) -> Path:
    """The portfolio file to use: ``path``, else $ORCH_CONFIG, else a default file.

    The returned path may not exist when it was named explicitly; the loader
    reports that. Raises ConfigError when nothing names a file.
    """
    if path is not None and str(path):
        return Path(path).expanduser()
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no config file: pass --config FILE, set {CONFIG_ENV}, or create ./orch.json"
    )


def load_portfolio(path: str | Path | None = None) -> PortfolioConfig:
    """Read and validate a portfolio file (see :func:`find_config` for lookup)."""
    source = find_config(path).absolute()
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    return portfolio_from_dict(data, source)
