"""What an agent session's tools may see: their environment and the paths they may read.

The Claude Code CLI needs the model credentials; the tools it runs (Bash and
every command Bash starts) must never have them, nor the GitHub token, nor
anything else the user exported. Two layers do that:

- The CLI itself starts with an allow-list of the environment (applied by
  ``orch-leash``, which runs the CLI): PATH, locale, TMPDIR, SHELL, proxy and
  CA settings, the CLI's own ``ANTHROPIC_*``/``CLAUDE_*`` settings, a HOME of
  the session's own, and the project's ``agent_env``. The GitHub token,
  webhook URLs and the rest of the user's environment never reach it.
- The CLI's sandbox settings unset, for every command it runs, the
  credentials it had to keep (``sandbox.credentials.envVars``), and Read deny
  rules fence the paths no agent may read: the user's keys and cloud
  configuration, other projects, the orchestrator's data dir and the agents'
  transcripts, and ``/proc`` (where a process's environment can be read back).
  The CLI turns Read deny rules into its sandbox's read restrictions too, so
  Bash cannot read them either.

Only the settings passed with ``--settings`` carry these: a project's own
``.claude/`` settings are never loaded (``setting_sources=[]``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.secrets import looks_secret

if TYPE_CHECKING:  # the leash imports this module at every agent's start: pydantic stays out
    from orchestrator.domain.config import PortfolioConfig, ProjectConfig

KEEP_ENV = "ORCH_AGENT_ENV_KEEP"
"""Names the leash keeps in the CLI's environment, comma-separated (besides KEPT_PREFIXES)."""

KEPT_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "LC_")
"""The CLI's own settings (and the SDK's, which it adds after us) and the locale."""

BASE_NAMES = (
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "SHELL", "TMPDIR", "USER", "LOGNAME",
    # Reaching the model through a proxy, with a private CA.
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "all_proxy", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    # Claude Code settings without a CLAUDE_ prefix.
    "API_TIMEOUT_MS", "MAX_THINKING_TOKENS", "BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS",
    "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "DISABLE_AUTOUPDATER", "USE_BUILTIN_RIPGREP",
)

# A model on Amazon Bedrock or Google Vertex needs the cloud's credentials in the CLI.
_CLOUD_PREFIXES = {"CLAUDE_CODE_USE_BEDROCK": ("AWS_",), "CLAUDE_CODE_USE_VERTEX": ("GOOGLE_", "CLOUD_ML_", "VERTEX_", "GCLOUD_")}
# Credentials whose names do not say so (and every AWS_ variable, see tool_denied_env).
_CREDENTIAL_NAMES = frozenset({"ANTHROPIC_CUSTOM_HEADERS", "GOOGLE_APPLICATION_CREDENTIALS"})

# Under the user's home: keys, cloud and tool credentials, other tools' configuration.
HOME_DENIED = (".ssh", ".aws", ".config", ".netrc", ".gnupg", ".docker", ".kube", ".azure",
               ".git-credentials", ".npmrc", ".pypirc", ".gem/credentials", ".cargo/credentials",
               ".cargo/credentials.toml", ".claude", ".claude.json", ".terraformrc", ".pgpass")


@dataclass(frozen=True)
class Fence:
    """What one agent session's tools get: environment names and the paths they may not read."""

    env_names: tuple[str, ...] = ()
    """The project's ``agent_env``: passed through to the tools as they are."""
    deny_read: tuple[Path, ...] = ()
    """Absolute paths no tool of the session may read."""
    allow_write: tuple[Path, ...] = ()
    """Paths besides the session's cwd its Bash may write (its own HOME)."""


def kept_names(fence: Fence, environ: Mapping[str, str]) -> list[str]:
    """The names the leash keeps in the CLI's environment (besides ``KEPT_PREFIXES``)."""
    names = [*BASE_NAMES, "HOME", *fence.env_names]
    for switch, prefixes in _CLOUD_PREFIXES.items():
        if environ.get(switch, "").strip().lower() in ("1", "true", "yes", "on"):
            names += [n for n in environ if n.startswith(prefixes)]
    return sorted(set(names))


def keeps(name: str, kept: Iterable[str]) -> bool:
    """Whether the leash keeps ``name`` in the CLI's environment."""
    return name.startswith(KEPT_PREFIXES) or name in set(kept)


def tool_denied_env(fence: Fence, environ: Mapping[str, str]) -> list[str]:
    """Credentials the CLI keeps that its tools must not get: unset in every command it runs."""
    kept = kept_names(fence, environ)
    passed = set(fence.env_names)
    return sorted(
        name for name in environ
        if keeps(name, kept) and name not in passed
        and (looks_secret(name) or name in _CREDENTIAL_NAMES or name.startswith("AWS_"))
    )


def fence_for(portfolio: PortfolioConfig, project: ProjectConfig, cwd: Path, config_dir: Path) -> Fence:
    """A session's fence in ``cwd``: the defaults, other projects, and the project's own settings."""
    paths = [Path.home() / name for name in HOME_DENIED]
    paths += [config_dir, portfolio.data_dir]
    paths += [p.path for p in portfolio.projects if p.path != project.path]
    paths += [(project.path / Path(p).expanduser()) for p in project.agent_read_deny]
    credentials = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if credentials:
        paths.append(Path(credentials))
    return Fence(env_names=tuple(v.name for v in project.agent_env),
                 deny_read=tuple(around(cwd, [p.resolve() for p in paths])))


def around(cwd: Path, paths: Iterable[Path]) -> list[Path]:
    """``paths`` without hiding ``cwd``: a path that holds it gives way to its other entries.

    A data dir beside the projects, or a project inside another one, must not
    fence off the session's own worktree.
    """
    cwd = cwd.resolve()
    out: list[Path] = []
    for path in dict.fromkeys(paths):
        if cwd != path and not cwd.is_relative_to(path):
            out.append(path)
        elif cwd != path and path.is_dir():
            out += around(cwd, path.iterdir())
    return out


def settings(fence: Fence, environ: Mapping[str, str], sandboxed_bash: bool) -> dict[str, Any]:
    """The ``--settings`` of a session: Read deny rules, and the Bash sandbox when it has Bash."""
    denied = sorted({str(p) for p in fence.deny_read})
    # "//" starts an absolute path in a permission rule; "/**" is everything under it.
    rules = [rule for path in denied for rule in (f"Read(/{path})", f"Read(/{path}/**)")]
    rules += ["Read(//proc/**)"]  # a process's environment can be read back there
    result: dict[str, Any] = {"permissions": {"deny": rules}}
    if sandboxed_bash:
        result["sandbox"] = {
            "enabled": True,
            "autoAllowBashIfSandboxed": True,
            "allowUnsandboxedCommands": False,
            "filesystem": {"allowWrite": [str(p) for p in fence.allow_write]},
            "credentials": {"envVars": [{"name": n, "mode": "deny"}
                                        for n in tool_denied_env(fence, environ)]},
        }
    return result


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_kept(value: str) -> set[str]:
    """The names in ``KEEP_ENV``'s value (what the leash reads)."""
    return {name for name in value.split(",") if _ENV_NAME.match(name)}
