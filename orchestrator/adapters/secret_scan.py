"""Finding secrets in what a branch adds, without ever repeating them.

A branch must not add a credential to the repository: the judge scans each
branch before its tests run and before the reviewer sees it, the refinery
scans what a merged result adds before main moves, and a pull request's
branch is scanned before it is pushed. Two kinds of secret are known:

- values the orchestrator holds (:func:`known_secrets`): environment
  variables whose names look secret, the project's GitHub token whatever its
  variable is called, the webhook URLs of the config, and the ``agent_env``
  variables marked ``secret``;
- well-known credential formats (:data:`PATTERNS`), kept tight enough that
  ordinary code does not match them.

Only what is added is scanned: the added lines of the diff, of every commit
in between, and the commits' messages. A :class:`Finding` names the file,
line and kind of a secret, never its value, so it can go anywhere a reason
goes: the verdict, the store, the audit trail, the next attempt's prompt.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.adapters.git_repo import GitRepo
from orchestrator.adapters.secrets import distinctive, secret_env
from orchestrator.domain.config import PortfolioConfig, ProjectConfig


@dataclass(frozen=True)
class Secret:
    """A secret value the orchestrator holds, and how a finding names it."""

    value: str
    kind: str  # e.g. "the value of $ANTHROPIC_API_KEY"; never the value


@dataclass(frozen=True)
class Finding:
    """A secret found in added text: where, and what kind. Never the value."""

    path: str  # a file, or "the message of commit 1a2b3c4d5e6f"
    line: int | None
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.path}" + (f":{self.line}" if self.line else "")


# Credential formats whose shape alone gives them away. Each asks for the
# length and alphabet of the real thing, so placeholders ("xoxb-your-token",
# "sk-...", "AKIAEXAMPLE") and ordinary identifiers do not match.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern)) for kind, pattern in (
        ("an AWS access key id", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
        ("a GitHub token", r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,}(?![A-Za-z0-9_])"),
        ("a GitHub token", r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{60,}"),
        ("a Slack token", r"(?<![A-Za-z0-9-])xox[abposr]-[0-9]{8,}-[0-9A-Za-z-]{8,}"),
        ("a Slack webhook URL",
         r"https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,}/[A-Za-z0-9]{6,}/[A-Za-z0-9]{16,}"),
        ("an Anthropic API key", r"(?<![A-Za-z0-9_-])sk-ant-[a-z0-9]{2,10}-[A-Za-z0-9_-]{32,}"),
        ("an OpenAI API key", r"(?<![A-Za-z0-9_-])sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,}"),
        ("an OpenAI API key", r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9]{40,}(?![A-Za-z0-9_-])"),
        ("a Google API key", r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
        ("a Stripe live key", r"(?<![A-Za-z0-9_])[sr]k_live_[0-9A-Za-z]{20,}"),
        # The header alone is what PEM parsers compare against; a key block has
        # base64 after it (maybe after headers, or escaped newlines in a string).
        ("a private key block",
         r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:\s|\\n)+"
         r"(?:[A-Za-z-]+: [^\n]*(?:\s|\\n)+)*[A-Za-z0-9+/=]{40,}"),
    )
)


def known_secrets(portfolio: PortfolioConfig, config: ProjectConfig) -> list[Secret]:
    """The secret values the orchestrator holds for ``config``'s project.

    The same minimum length as redaction applies: a short value would match
    ordinary text. Each value is named once, by its most specific source.
    """
    env = os.environ
    named: list[tuple[str, str | None]] = [
        (f"the project's GitHub token (${config.github_token_env})", env.get(config.github_token_env)),
        ("the project's webhook URL", config.webhook_url),
        ("a webhook URL from the portfolio", portfolio.webhook_url),
    ]
    named += [(f"the value of ${v.name}", env.get(v.name)) for v in config.agent_env if v.secret]
    named += [(f"the value of ${name}", value) for name, value in sorted(secret_env().items())]
    found: dict[str, Secret] = {}
    for kind, value in named:
        if value and distinctive(value) and value not in found:
            found[value] = Secret(value, kind)
    return list(found.values())


def scan_branch(repo: GitRepo, base: str, head: str, secrets: list[Secret]) -> list[Finding]:
    """What ``head`` adds over ``base`` (its files' lines, its commits' messages) that is a secret."""
    findings = scan_patch(repo.added_patch(base, head), secrets)
    for commit, message in repo.commit_messages(base, head).items():
        findings += scan_text(message, f"the message of commit {commit[:12]}", secrets)
    return _unique(findings)


def scan_patch(patch: bytes, secrets: list[Secret]) -> list[Finding]:
    """The secrets on the added lines of unified diffs (``-U0`` or not, several concatenated).

    The patch is read as latin-1, which maps every byte to one character, so
    binary files diffed as text are scanned byte for byte; values are compared
    as their UTF-8 bytes read the same way.
    """
    text = patch.decode("latin-1")
    as_bytes = [Secret(s.value.encode().decode("latin-1"), s.kind) for s in secrets]
    findings: list[Finding] = []
    for path, start, lines in _added_hunks(text):
        findings += _scan_lines(_utf8(path), start, lines, as_bytes)
    return _unique(findings)


def scan_text(text: str, where: str, secrets: list[Secret]) -> list[Finding]:
    """The secrets in one piece of text (a commit message, a pull request's body)."""
    return _scan_lines(where, 1, text.splitlines(), secrets)


def secret_reason(findings: list[Finding], subject: str = "the branch adds") -> str:
    """A rejection reason naming where and what, never the values."""
    shown = ", ".join(str(f) for f in findings[:8])
    more = f" and {len(findings) - 8} more" if len(findings) > 8 else ""
    one = len(findings) == 1
    return (f"{subject} {'a secret' if one else 'secrets'}: {shown}{more}; remove "
            f"{'it' if one else 'them'} (never write credentials into the repository)")


def _scan_lines(path: str, start: int, lines: list[str], secrets: list[Secret]) -> list[Finding]:
    """Findings in consecutive lines, the first numbered ``start``."""
    text = "\n".join(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def line_of(offset: int) -> int:
        return start + bisect.bisect_right(starts, offset) - 1

    findings: list[Finding] = []
    covered: list[tuple[int, int]] = []
    for secret in secrets:
        for at in _occurrences(text, secret.value):
            covered.append((at, at + len(secret.value)))
            findings.append(Finding(path, line_of(at), secret.kind))
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(text):
            # A known value that also has a known shape is named once, by its source.
            if not any(a <= match.start() < b for a, b in covered) and not _placeholder(match.group()):
                findings.append(Finding(path, line_of(match.start()), kind))
    return sorted(findings, key=lambda f: f.line or 0)


def _placeholder(token: str) -> bool:
    """Documentation's stand-ins (``AKIAIOSFODNN7EXAMPLE``, ``.../XXXXXXXXXXXXXXXXXXXXXXXX``):
    they say so, or their last characters hardly vary, which random keys always do."""
    return "example" in token.lower() or len(set(token[-16:])) < 6


def _occurrences(text: str, value: str) -> Iterator[int]:
    at = text.find(value)
    while at >= 0:
        yield at
        at = text.find(value, at + 1)


_HUNK = re.compile(r"^@@+ (?:-\d+(?:,\d+)? )+\+(\d+)(?:,(\d+))? @@+")


def _added_hunks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(path, first line number, added lines) of each run of added lines."""
    path, lineno, left = "", 0, 0
    run: list[str] = []
    run_start = 0
    for line in text.split("\n"):
        if left > 0 and line[:1] in ("+", "-", " ", "\\"):
            if line.startswith("+"):
                if not run:
                    run_start = lineno
                run.append(line[1:])
                lineno += 1
                left -= 1
            else:
                if run:
                    yield path, run_start, run
                    run = []
                if line.startswith(" "):
                    lineno += 1
                    left -= 1
            continue
        if run:
            yield path, run_start, run
            run = []
        left = 0
        if line.startswith("+++ "):
            path = _path(line[4:])
        elif hunk := _HUNK.match(line):
            lineno, left = int(hunk.group(1)), int(hunk.group(2) or "1")
    if run:
        yield path, run_start, run


def _path(field: str) -> str:
    """The path of a ``+++ b/path`` line: unquoted, without the ``b/`` prefix."""
    if field.startswith('"'):
        field = _unquote(field)
    field = field.rstrip("\t")  # git ends a name holding a space with a tab
    return field.removeprefix("b/")


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "r": "\r", "v": "\v"}


def _unquote(field: str) -> str:
    """A C-quoted name as git writes it (``"b/q\\"uote"``), octal escapes as bytes (latin-1)."""
    out, i, body = [], 1, field.rstrip("\t")
    while i < len(body) - 1:
        char = body[i]
        if char == "\\" and re.match(r"[0-7]{3}", body[i + 1 : i + 4]):
            out.append(chr(int(body[i + 1 : i + 4], 8)))
            i += 4
        elif char == "\\":
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _utf8(name: str) -> str:
    """A path read as latin-1, shown as the UTF-8 it is."""
    return name.encode("latin-1").decode("utf-8", errors="replace")


def _unique(findings: list[Finding]) -> list[Finding]:
    """One finding per file and kind: the first (the result's diff comes before the commits')."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for finding in findings:
        if (finding.path, finding.kind) not in seen:
            seen.add((finding.path, finding.kind))
            kept.append(finding)
    return kept
